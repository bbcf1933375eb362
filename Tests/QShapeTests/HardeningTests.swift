// Tests: hostile and clumsy inputs, one regression test each, and the fuzz corpus replayed.
import XCTest
import Foundation
import DataIO
import Tensors
import NeuralNet
import Quantization
@testable import Workflows
@testable import Config

/// Issue 13's hostile and clumsy inputs, each a regression test: a one-line error (or correct
/// behaviour), never a trap, a hang or lost files.
final class HardeningTests: XCTestCase {
    /// A safetensors file with a hand-written header and `data` bytes after it.
    func safetensors(_ header: String, data: [UInt8]) -> [UInt8] {
        var json = Array(header.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        return withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) } + json + data
    }

    func refused(_ bytes: [UInt8], _ expected: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafeTensors.decode(bytes, path: "x.safetensors"), file: file, line: line) {
            XCTAssertTrue("\($0)".contains(expected), "\($0)", file: file, line: line)
            XCTAssertFalse("\($0)".contains("\n"), file: file, line: line)
        }
    }

    func testSafetensorsHeadersAreValidatedAsTheFormatSpecifies() throws {
        let four = [UInt8](repeating: 0, count: 16)
        refused(
            safetensors(
                #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 9223372036854775807]}}"#,
                data: four), "data_offsets [0, 9223372036854775807]")
        refused(
            safetensors(#"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 24]}}"#, data: four),
            "outside the file")
        refused(
            safetensors(
                #"{"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 4294967296], "data_offsets": [0, 16]}}"#,
                data: four), "needs more than 2^63")
        refused(
            safetensors(#"{"": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#, data: four),
            "empty name")
        refused(
            safetensors(
                #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0.5, 16.5]}}"#, data: four + [0]),
            "expected two whole numbers")
        refused(
            safetensors(#"{"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}"#, data: four),
            "whole numbers")
        refused(
            safetensors(
                #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}"#,
                data: four), "must not overlap")
        refused(
            safetensors(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}"#, data: four),
            "starts at byte 8")
        refused(
            safetensors(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: four),
            "8 bytes after the last tensor")
        // Odd but legal names sort without trapping.
        let odd = try SafeTensors.decode(
            safetensors(
                #"{".": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "10.w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}"#,
                data: four), path: "x")
        XCTAssertEqual(odd.entries.map(\.name), [".", "10.w"])
    }

    func testIDXAndNPYSizesAreCheckedBeforeAnythingIsRead() throws {
        let dir = temporaryDirectory(self)
        let huge: [UInt8] = [0, 0, 8, 3] + [UInt8](repeating: 0xFF, count: 12)
        try writeAtomically(huge, to: "\(dir)/huge.idx")
        XCTAssertThrowsError(try IDX.read("\(dir)/huge.idx")) {
            XCTAssertTrue("\($0)".contains("promise more than 4 GiB"), "\($0)")
        }
        // A gzip file whose header promises 2 images but which unpacks to 2 MB more: refused after
        // reading at most what the header promises.
        let bomb = IDX.encode(
            dimensions: [2, 28, 28], bytes: [UInt8](repeating: 0, count: 2 * 784 + 2_000_000))
        try writeAtomically(bomb, to: "\(dir)/bomb.idx")
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = ["-f", "\(dir)/bomb.idx"]
        try gzip.run(); gzip.waitUntilExit()
        XCTAssertThrowsError(try IDX.read("\(dir)/bomb.idx.gz")) {
            XCTAssertTrue("\($0)".contains("file holds more"), "\($0)")
        }
        for shape in [
            "(4294967296, 4294967296, 4294967296)", "(4611686018427387904,)", "(-1000, 28, 28)", "(2, x)"
        ] {
            var header = "{'descr': '|u1', 'fortran_order': False, 'shape': \(shape), }"
            while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
            header += "\n"
            let bytes =
                [0x93] + Array("NUMPY".utf8) + [
                    1, 0, UInt8(header.utf8.count & 255), UInt8(header.utf8.count >> 8)
                ] + Array(header.utf8) + [1, 2]
            try writeAtomically(bytes, to: "\(dir)/x.npy")
            XCTAssertThrowsError(try NPY.read("\(dir)/x.npy"), shape) {
                XCTAssertTrue("\($0)".contains("x.npy: "), "\($0)")
            }
        }
        let ok = NPY.encode(shape: [2, 3], values: .uint8([1, 2, 3, 4, 5, 6]))
        try writeAtomically(ok, to: "\(dir)/ok.npy")
        XCTAssertEqual(try NPY.read("\(dir)/ok.npy").shape, [2, 3])
    }

    /// NaN, infinite, huge and subnormal weights: refused with the tensor named, or quantised
    /// without a trap or a hang.
    func testNonFiniteHugeAndSubnormalWeights() throws {
        let dir = temporaryDirectory(self)
        let config = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"), overrides: ["data.dir=\(Fixtures.fashion)"])
        let data = try config.data.load()
        let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
        func save(_ change: (Int, inout [Float]) -> Void) throws -> String {
            let path = "\(dir)/w-\(UUID().uuidString).safetensors"
            let entries = model.namedState.enumerated().map { i, item -> SafeTensors.Entry in
                var v = item.parameter.value.data
                change(i, &v)
                return SafeTensors.Entry(name: item.name, floats: v, shape: item.parameter.value.shape)
            }
            try SafeTensors.write(SafeTensors.File(entries: entries), to: path)
            return path
        }
        for bad in [Float.nan, .infinity, 3e38] {
            let path = try save { i, v in if i == 2 { v[5] = bad } }
            XCTAssertThrowsError(try Weights.load(path, into: model)) {
                XCTAssertTrue("\($0)".contains("tensor '3.weight' holds"), "\($0)")
            }
            XCTAssertThrowsError(try StatsWorkflow.run(path: path, bits: 8, channels: false)) {
                XCTAssertTrue("\($0)".contains("tensor '3.weight' holds"), "\($0)")
            }
            let r = try qshape([
                "quantize", Fixtures.example("fashion-mlp.yaml"), "--set", "data.dir=\(Fixtures.fashion)",
                "--weights", path
            ])
            XCTAssertEqual(r.status, 2)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        // Subnormal and near-zero layers, and weights near the limit, end in a result or one error line.
        for scale in [Float(1e-41), 1e-30, 1e29] {
            let path = try save { i, v in if i == 0 { v = v.map { $0 * scale } } }
            let r = try qshape([
                "quantize", Fixtures.example("fashion-mlp.yaml"), "--set", "data.dir=\(Fixtures.fashion)",
                "--weights", path, "--bits", "8", "4"
            ])
            XCTAssertTrue(
                r.status == 0
                    || (r.status == 2 && r.stderr.hasPrefix("error: ")
                        && r.stderr.split(separator: "\n").count == 1),
                "scale \(scale): \(r.status) \(r.stderr)")
        }
    }

    /// A layer whose weights (or weights and bias) are all zero converts: its output multiplier
    /// is 1 and an always-zero activation gets a unit range, so no accumulator blows up, and the
    /// integer engine agrees with the float model.
    func testAllZeroLayersConvert() throws {
        let config = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"), overrides: ["data.dir=\(Fixtures.fashion)"])
        let data = try config.data.load()
        for zeroBias in [false, true] {
            let model = try TrainWorkflow.makeModel(config, sampleShape: data.test.sampleShape)
            try Weights.load("\(Fixtures.dir)/pytorch-trained-mlp.safetensors", into: model)
            for p in model.layers[3].state where p.role == .weight || zeroBias {
                p.value = Tensor(shape: p.value.shape, data: [Float](repeating: 0, count: p.value.count))
            }
            var q = QuantizeConfig()
            q.bits = [8, 4]
            let (r, _) = try QuantizeWorkflow.run(
                config, model: model, data: data, settings: q, weightsLabel: "zeroed")
            for b in r.results {
                XCTAssertEqual(
                    b.integerAccuracy ?? -1, r.floatAccuracy, accuracy: 1.0,
                    "bits \(b.bits), zero bias \(zeroBias)")
                XCTAssertLessThanOrEqual(b.layers.compactMap(\.accumulatorBitsNeeded).max() ?? 99, 32)
            }
        }
    }

    /// `quantize --out` into a folder that holds quantize results replaces them only with --force
    /// (checked before converting); a new folder appears whole.
    func testQuantizeOutReplacesResultsOnlyWithForce() throws {
        let dir = temporaryDirectory(self)
        let base = [
            "quantize", Fixtures.example("fashion-mlp.yaml"), "--set", "data.dir=\(Fixtures.fashion)",
            "--weights", "\(Fixtures.dir)/pytorch-trained-mlp.safetensors", "--out", "\(dir)/q"
        ]
        XCTAssertEqual(try qshape(base + ["--bits", "8", "4"]).status, 0)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: dir)), ["q"])
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/q/quantization.json"))
        let refused = try qshape(base + ["--bits", "8"])
        XCTAssertEqual(refused.status, 1)
        XCTAssertEqual(
            refused.stderr,
            "error: \(dir)/q already holds quantize results (model-int4.safetensors and 2 more): pass --force to replace them, or --out to choose another folder\n"
        )
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/q/quantization.json")), before)
        XCTAssertEqual(try qshape(base + ["--bits", "8", "--force"]).status, 0)
        // The folder is a report of its own (config, weights, provenance), comparable with runs.
        XCTAssertEqual(
            Set(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/q")),
            [
                "quantization.json", "model-int8.safetensors", "config.yaml", "model.safetensors",
                "provenance.json",
                "report.json", "report.md", "report.html"
            ])
        let c = try qshape(["compare", "\(dir)/q", "\(dir)/q/report.json"])
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertTrue(c.stdout.contains("| integer W8/A8 | "), c.stdout)
        let report = try String(contentsOfFile: "\(dir)/q/report.md", encoding: .utf8)
        XCTAssertTrue(report.hasPrefix("# QShape report: q\n"), report)
        XCTAssertTrue(report.contains("None in this folder: `qshape quantize` converted the weights"), report)
    }

    /// A quantize section that cannot convert the trained model (16-bit weights and activations in
    /// an int32 accumulator) is announced before training, and the trained run is kept.
    func testARefusedQuantizeSectionKeepsTheTrainedRun() throws {
        let dir = temporaryDirectory(self)
        let r = try qshape([
            "train", Fixtures.example("fashion-mlp.yaml"), "--out", "\(dir)/run", "--set",
            "data.dir=\(Fixtures.fashion)",
            "--set", "training.epochs=1", "--set", "training.max_steps_per_epoch=3",
            "--set", "quantize.bits=16", "--set", "quantize.activation_bits=16"
        ])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(
            r.stdout.contains(
                "training fashion-mlp: 3000 training images, 1000 test images, 1 epochs of 3 steps\nnote: the quantize section refuses the initial weights ("
            ), r.stdout)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(
            r.stderr.contains("more than int32;")
                && r.stderr.contains("the trained model is saved in \(dir)/run (without quantize results)"),
            r.stderr)
        XCTAssertEqual(
            Set(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/run")),
            [
                "config.yaml", "initial.safetensors", "metrics.jsonl", "model.safetensors", "provenance.json",
                "report.html", "report.json", "report.md"
            ])
    }

    /// A 342-byte alias bomb (nine levels of nine aliases) is refused at its first alias, at once.
    func testYAMLAliasesAreRefusedBeforeTheyMultiply() throws {
        var bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
        for (prev, name) in zip("abcdefgh", "bcdefghi") {
            bomb +=
                "\(name): &\(name) [" + Array(repeating: "*\(prev)", count: 9).joined(separator: ",") + "]\n"
        }
        let start = Date()
        XCTAssertThrowsError(try ConfigNode.parse(yaml: bomb, file: "bomb.yaml")) {
            XCTAssertTrue(
                "\($0)".contains("YAML anchors and aliases (&name, *name) are not supported"), "\($0)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertThrowsError(try ConfigNode.parse(yaml: "name: &n x\nother: *n\n", file: "c.yaml")) {
            XCTAssertEqual(
                "\($0)",
                "c.yaml:1: YAML anchors and aliases (&name, *name) are not supported in configs; write the value out"
            )
        }
        // The fuzzer's find: nested aliases as a mapping key, which Yams hashes exponentially.
        let keyBomb = try String(
            contentsOfFile: "\(Fixtures.repository)/Fuzz/regressions/config/alias-key-bomb.yaml",
            encoding: .isoLatin1)
        XCTAssertThrowsError(try ConfigNode.parse(yaml: keyBomb, file: "k.yaml"))
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        // Stars and ampersands inside values, quotes and comments are not aliases.
        let fine = "name: \"a*b\"\nx: 'c &d'\ny: 2*3\nz: a-*b  # *not an alias\nw: [1, 2]\n"
        XCTAssertNoThrow(try ConfigNode.parse(yaml: fine, file: "f.yaml"))
    }

    /// Layer geometry as PyTorch checks it, and sizes checked before anything is allocated.
    func testLayerGeometryAndSizeLimitsAreCheckedBeforeAllocating() throws {
        let image = [1, 28, 28]
        func refused(_ specs: [LayerSpec], _ expected: String, line: UInt = #line) {
            XCTAssertThrowsError(try Sequential(specs: specs, inputShape: image, seed: 0), line: line) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)", line: line)
            }
        }
        refused([.maxpool2d(kernel: 2, stride: nil, padding: 5)], "padding 5 is more than half its kernel 2")
        refused([.maxpool2d(kernel: 30, stride: 30, padding: 0)], "does not fit a 28x28 input")
        refused([.avgpool2d(kernel: 29, stride: 29)], "does not fit a 28x28 input")
        refused(
            [.conv2d(inChannels: 1, outChannels: 2, kernel: 31, stride: 31, padding: 1, bias: true)],
            "does not fit a 28x28 input")
        refused(
            [.flatten, .dense(inFeatures: 784, outFeatures: 1_000_000_000, bias: true)],
            "more than 200000000 parameters")
        refused(
            [.flatten, .dense(inFeatures: nil, outFeatures: Int.max, bias: true)],
            "more than 200000000 parameters")
        refused(
            [.conv2d(inChannels: 1, outChannels: 100_000, kernel: 3, stride: 1, padding: 1, bias: true)],
            "activations per sample")
        refused(Array(repeating: .relu, count: 200_000), "at most 1000")
    }

    /// A diverging run (SGD at lr 1000 with the kurtosis penalty) stops at the step it happens
    /// with one line that says where and what to change, and writes no run folder.
    func testDivergingTrainingStopsWithOneLine() throws {
        let dir = temporaryDirectory(self)
        let r = try qshape([
            "train", Fixtures.example("fashion-mlp-kurtosis.yaml"), "--out", "\(dir)/run",
            "--set", "data.dir=\(Fixtures.fashion)", "--set", "training.epochs=2",
            "--set", "training.max_steps_per_epoch=20", "--set", "training.optimizer={name: sgd, lr: 1000}"
        ])
        XCTAssertEqual(r.status, 1)
        XCTAssertTrue(r.stderr.hasPrefix("error: training diverged at epoch 1, step "), r.stderr)
        XCTAssertTrue(
            r.stderr.contains("training.optimizer.lr (now 1000.0)") || r.stderr.contains("shaping term"),
            r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    func testEmptyDataSetsAndCRLFFilesAreHandled() throws {
        let dir = temporaryDirectory(self)
        try writeAtomically(
            IDX.encode(dimensions: [2, 28, 28], bytes: [UInt8](repeating: 7, count: 2 * 784)),
            to: "\(dir)/train-x")
        try writeAtomically(IDX.encode(dimensions: [2], bytes: [0, 1]), to: "\(dir)/train-y")
        try writeAtomically(IDX.encode(dimensions: [0, 28, 28], bytes: []), to: "\(dir)/test-x")
        try writeAtomically(IDX.encode(dimensions: [0], bytes: []), to: "\(dir)/test-y")
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: [
                "data.train_images=\(dir)/train-x", "data.train_labels=\(dir)/train-y",
                "data.test_images=\(dir)/test-x", "data.test_labels=\(dir)/test-y", "training.epochs=1"
            ])
        XCTAssertThrowsError(try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)) {
            XCTAssertTrue("\($0)".hasSuffix("data: the test set has no images"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/run"))
        write("label,a,b\r\n1,2,3\r\n0,4,5\r\n", to: "\(dir)/crlf.csv")
        let d = try CSV.dataset(path: "\(dir)/crlf.csv")
        XCTAssertEqual(d.labels, [1, 0])
        write("1,2\n1e30,3\n", to: "\(dir)/huge-label.csv")
        XCTAssertThrowsError(try CSV.dataset(path: "\(dir)/huge-label.csv")) {
            XCTAssertTrue("\($0)".contains(":2: label"), "\($0)")
        }
    }

    /// Atomic writes leave nothing beside the file, and clear what a killed writer left.
    func testAtomicWritesLeaveNoTemporaryFiles() throws {
        let dir = temporaryDirectory(self)
        write("left by a killed process", to: "\(dir)/.m.json.tmp-2147480001-7")
        try writeAtomically("{}", to: "\(dir)/m.json")
        try writeAtomically("{\"a\": 1}", to: "\(dir)/m.json")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.json"])
        XCTAssertEqual(try String(contentsOfFile: "\(dir)/m.json", encoding: .utf8), "{\"a\": 1}")
        XCTAssertThrowsError(try writeAtomically("x", to: "\(dir)/no/such/folder/f")) {
            XCTAssertTrue("\($0)".hasPrefix("\(dir)/no/such/folder/f: cannot be written"), "\($0)")
        }
    }

    /// Every seed and every input that once crashed a parser (Fuzz/) goes through its fuzz target:
    /// a trap here fails the suite.
    func testFuzzCorpusAndRegressionsReplay() throws {
        var count = 0
        for target in FuzzTarget.allCases {
            for folder in ["corpus", "regressions"] {
                for file in FuzzTarget.files(
                    under: "\(Fixtures.repository)/Fuzz/\(folder)/\(target.rawValue)")
                {
                    target.run(try XCTUnwrap(FileManager.default.contents(atPath: file)).map { $0 })
                    count += 1
                }
            }
        }
        XCTAssertGreaterThanOrEqual(count, 30)
    }

    /// Numbers that would overflow Float (or the input scaling) are config errors naming the key.
    func testOverflowingNumbersAreConfigErrors() throws {
        for (key, value) in [
            ("data.scale", "1e300"), ("data.std", "1e-29"), ("training.optimizer.eps", "1e-300"),
            ("training.optimizer.weight_decay", "1e308"), ("training.optimizer.lr", "1e40")
        ] {
            XCTAssertThrowsError(
                try Config.load(path: Fixtures.example("fashion-mlp.yaml"), overrides: ["\(key)=\(value)"]),
                key
            ) {
                XCTAssertTrue("\($0)".contains(key.split(separator: ".").last!), "\($0)")
                XCTAssertFalse("\($0)".contains("\n"))
            }
        }
    }

    func testRunNamesAreOneSafePathComponent() throws {
        for name in ["..", ".", "-", "a/b", ".hidden", ""] {
            XCTAssertThrowsError(
                try Config.load(path: Fixtures.example("fashion-mlp.yaml"), overrides: ["name=\"\(name)\""]),
                name
            ) {
                XCTAssertTrue("\($0)".contains("name"), "\($0)")
            }
        }
        // A name YAML would read as null or a number survives the resolved config.
        for name in ["null", "123", "true"] {
            let c = try Config.load(
                path: Fixtures.example("fashion-mlp.yaml"), overrides: ["name=\"\(name)\""])
            XCTAssertEqual(c.name, name)
            let dir = temporaryDirectory(self)
            write(c.resolvedYAML, to: "\(dir)/c.yaml")
            XCTAssertEqual(try Config.load(path: "\(dir)/c.yaml").name, name)
        }
    }

    /// --force replaces a run folder only once the new run has succeeded; a failed run leaves
    /// the old folder as it was and no staging folder behind.
    func testForceKeepsTheOldRunUntilTheNewOneSucceeds() throws {
        let dir = temporaryDirectory(self)
        let base = ["data.dir=\(Fixtures.fashion)", "training.epochs=1", "training.max_steps_per_epoch=3"]
        let c = try Config.load(path: Fixtures.example("fashion-mlp.yaml"), overrides: base)
        _ = try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/run/model.safetensors"))
        // Fails while training: the loss diverges before any checkpoint.
        let failing = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: [
                "data.dir=\(Fixtures.fashion)", "training.epochs=1",
                "training.optimizer={name: sgd, lr: 10000}"
            ])
        XCTAssertThrowsError(try TrainWorkflow.run(failing, outDir: "\(dir)/run", force: true, observer: nil))
        {
            XCTAssertTrue("\($0)".contains("nothing was written"), "\($0)")
        }
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/run/model.safetensors")), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["run"])
        // Without --force an existing folder is refused before any training.
        XCTAssertThrowsError(try TrainWorkflow.run(c, outDir: "\(dir)/run", force: false, observer: nil)) {
            XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
        }
        let other = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"), overrides: base + ["training.seed=7"])
        _ = try TrainWorkflow.run(other, outDir: "\(dir)/run", force: true, observer: nil)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/run/model.safetensors")), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["run"])
    }

    /// Two runs to one new folder at the same moment: exactly one succeeds, and the folder holds
    /// one run's files, not a mixture — in 100 of 100 trials.
    func testConcurrentRunsToOneFolderLetExactlyOneWin() throws {
        for trial in 0..<100 {
            let dir = temporaryDirectory(self)
            final class Outcome: @unchecked Sendable { var results: [CommandResult?] = [nil, nil] }
            let outcome = Outcome()
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                outcome.results[i] = try? qshape([
                    "train", Fixtures.example("fashion-mlp.yaml"), "--out", "\(dir)/run",
                    "--set", "data.dir=\(Fixtures.fashion)", "--set", "training.epochs=1",
                    "--set", "training.max_steps_per_epoch=2", "--set", "training.seed=\(i)"
                ])
            }
            let statuses = outcome.results.map { $0?.status ?? -1 }
            XCTAssertEqual(
                statuses.sorted(), [0, 1], "trial \(trial): \(outcome.results.map { $0?.stderr ?? "" })")
            let winner = statuses.firstIndex(of: 0) ?? 0
            let yaml = try String(contentsOfFile: "\(dir)/run/config.yaml", encoding: .utf8)
            XCTAssertTrue(yaml.contains("seed: \(winner)"), yaml)
        }
    }
}
