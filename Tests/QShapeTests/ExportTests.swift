// Tests: C export of hand-made integer models against the integer engine, and its refusals.
import XCTest
import Foundation
import Tensors
import DataIO
import IntegerRuntime
@testable import Export
@testable import Workflows
@testable import Config

/// `qshape export`: weight packing, the generated C against the Swift integer engine (hand-made
/// models reaching every kernel variant and edge value), and the refusals.
final class ExportTests: XCTestCase {
    func testPackedWeightsRoundTripEveryFieldValueInCMSISOrder() {
        for f in [WeightFormat.p2, .p4, .i8, .i16] {
            let (lo, hi) = f.range
            let w = ((0..<37).map { lo + Int32($0) % (hi - lo + 1) } + [lo, hi]).map { Int16($0) }
            let packed = f.pack(w)
            XCTAssertEqual(f.unpack(packed, count: w.count), w, "\(f)")
            if f == .p2 || f == .p4 {
                XCTAssertEqual(packed.count, f.storageBytes(w.count))
                XCTAssertTrue(packed.allSatisfy { (0...255).contains($0) })
            }
        }
        // The first weight in the lowest bits, as CMSIS-NN's s4 kernels read them.
        XCTAssertEqual(WeightFormat.p4.pack([1, -1]), [0xF1])
        XCTAssertEqual(WeightFormat.p2.pack([1, -1, 0, -2]), [0b10_00_11_01])
        XCTAssertEqual(
            [2, 3, 4, 5, 8, 9, 16].map { WeightFormat.forBits($0) }, [.p2, .p4, .p4, .i8, .i8, .i16, .i16])
    }

    /// Random weights over each format's whole range, random biases and requantisation.
    static func weights(_ n: Int, _ f: WeightFormat, _ rng: inout SeededRandom) -> [Int16] {
        let (lo, hi) = f.range
        return ([lo, hi] + (2..<n).map { _ in lo + Int32(rng.below(Int(hi - lo) + 1)) }).map { Int16($0) }
    }

    /// The widths whose storage is each format (2, 4, 8 and 16 bits).
    static func width(_ f: WeightFormat) -> BitWidth {
        BitWidth(f == .p2 ? 2 : f == .p4 ? 4 : f == .i8 ? 8 : 16)!
    }

    static func requant(
        _ rows: Int, perChannel: Bool, shift: ClosedRange<Int>, multiplier: ClosedRange<Int64>,
        out: (Int64, Int64), bits: Int, _ rng: inout SeededRandom
    ) -> Requantization {
        let m = (0..<rows).map { _ in
            multiplier.lowerBound + Int64(rng.below(Int(multiplier.upperBound - multiplier.lowerBound) + 1))
        }
        let s = (0..<rows).map { _ in Int64(shift.lowerBound + rng.below(shift.count)) }
        return Requantization(
            multiplier: perChannel ? m : Array(repeating: m[0], count: rows),
            shift: perChannel ? s : Array(repeating: s[0], count: rows),
            outMin: out.0, outMax: out.1, accumulatorBits: bits)
    }

    /// A conv path: 4-bit conv with stride and padding → max pool with padding → ReLU clamp →
    /// 16-bit-weight conv with a 64-bit accumulator and power-of-two scales → average pool →
    /// 2×2 max pool → global average pool → flatten → 2-bit dense with int16 outputs.
    static func convModel() -> (IntegerModel, [Int]) {
        var rng = SeededRandom(seed: 11)
        let conv1 = IntegerConv(
            inChannels: 2, outChannels: 3, kernel: 3, stride: 2, padding: 1,
            weight: weights(3 * 2 * 9, .p4, &rng), weightBits: width(.p4),
            bias: (0..<3).map { _ in Int64(rng.below(1001)) - 500 },
            requant: requant(
                3, perChannel: true, shift: 36...39, multiplier: (1 << 29)...(1 << 31 - 1),
                out: (-128, 127), bits: 32, &rng))
        let conv2 = IntegerConv(
            inChannels: 3, outChannels: 4, kernel: 2, stride: 1, padding: 0,
            weight: weights(4 * 3 * 4, .i16, &rng), weightBits: width(.i16),
            bias: (0..<4).map { _ in Int64(rng.below(200_001)) - 100_000 },
            requant: requant(
                4, perChannel: true, shift: 10...14, multiplier: 1...1,
                out: (-32768, 32767), bits: 64, &rng))
        let dense = IntegerDense(
            inFeatures: 4, outFeatures: 5, weight: weights(20, .p2, &rng), weightBits: width(.p2),
            bias: (0..<5).map { _ in Int64(rng.below(20_001)) - 10_000 },
            requant: requant(
                5, perChannel: false, shift: 31...31, multiplier: (1 << 30)...(1 << 30),
                out: (-32768, 32767), bits: 32, &rng))
        let layers: [IntegerLayer] = [
            .conv(conv1), .maxPool(kernel: 3, stride: 1, padding: 1), .clamp(lo: 0, hi: 100),
            .conv(conv2), .avgPool(kernel: 2, stride: 1), .maxPool(kernel: 2, stride: 2, padding: 0),
            .globalAvgPool, .flatten, .dense(dense)
        ]
        return (IntegerModel(inputShape: [2, 9, 7], layers: layers), [4, 16, 2])
    }

    /// A dense path with rows that do not start on byte boundaries (37 four-bit weights) and
    /// 64-bit multipliers.
    static func denseModel() -> (IntegerModel, [Int]) {
        var rng = SeededRandom(seed: 12)
        let d1 = IntegerDense(
            inFeatures: 37, outFeatures: 11, weight: weights(37 * 11, .p4, &rng), weightBits: width(.p4),
            bias: (0..<11).map { _ in Int64(rng.below(4001)) - 2000 },
            requant: requant(
                11, perChannel: true, shift: 35...37, multiplier: (1 << 30)...(1 << 31 - 1),
                out: (0, 255), bits: 32, &rng))
        let d2 = IntegerDense(
            inFeatures: 11, outFeatures: 6, weight: weights(66, .i8, &rng), weightBits: width(.i8),
            bias: (0..<6).map { _ in Int64(rng.below(2001)) - 1000 },
            requant: requant(
                6, perChannel: true, shift: 40...43, multiplier: (1 << 33)...(1 << 34),
                out: (-127, 127), bits: 64, &rng))
        return (
            IntegerModel(inputShape: [37], layers: [.dense(d1), .dense(d2), .clamp(lo: -50, hi: 60)]), [4, 8]
        )
    }

    /// A clamp whose bounds lie above every input (all outputs become 300: int16 storage), then
    /// a dense layer with per-tensor fixed-point scales.
    static func clampModel() -> (IntegerModel, [Int]) {
        var rng = SeededRandom(seed: 14)
        let d = IntegerDense(
            inFeatures: 5, outFeatures: 3, weight: weights(15, .i8, &rng), weightBits: width(.i8),
            bias: [5, -7, 300],
            requant: requant(
                3, perChannel: false, shift: 41...41, multiplier: (1 << 30)...(1 << 30),
                out: (-128, 127), bits: 32, &rng))
        return (IntegerModel(inputShape: [5], layers: [.clamp(lo: 300, hi: 400), .dense(d)]), [8])
    }

    /// Random images with an all-255 and an all-0 image first.
    static func images(_ shape: [Int], count: Int, classes: Int) -> Dataset {
        var rng = SeededRandom(seed: 13)
        let size = shape.reduce(1, *)
        let bytes =
            [UInt8](repeating: 255, count: size) + [UInt8](repeating: 0, count: size)
            + (0..<(size * (count - 2))).map { _ in UInt8(truncatingIfNeeded: rng.next() >> 56) }
        return Dataset(
            sampleShape: shape, storage: .bytes(bytes),
            labels: (0..<count).map { _ in Int32(rng.below(classes)) })
    }

    func checkAgainstEngine(_ target: ExportWorkflow.Target, images: Int) throws {
        for (model, bits) in [ExportTests.convModel(), ExportTests.denseModel(), ExportTests.clampModel()] {
            XCTAssertEqual(
                model.layers.compactMap(\.weightBits).map(\.bits), bits, "the widths the model records")
            let c = try CGenerator.generate(model, prefix: "net", convBlock: 5)
            let engine = IntegerEngine(model)
            let data = ExportTests.images(
                model.inputShape, count: images, classes: engine.shapes.last!.reduce(1, *))
            // The engine saturates rather than wraps on these models: outputs reach both clamps.
            let outputs = (0..<images).flatMap { engine.run(data.rawBytes($0)!.map { Int16($0) }) }
            XCTAssertGreaterThan(Set(outputs).count, model.layers.count > 2 ? 20 : 1)
            let r = try ExportVerifier.verify(c, engine: engine, test: data, images: images, target: target) {
                _ in
            }
            XCTAssertEqual(r.mismatchingImages, 0, "\(target) \(model.inputShape)")
            XCTAssertEqual(r.images, images)
        }
    }

    func testGeneratedCMatchesTheEngineOnTheHostBitForBit() throws {
        _ = try requireTool("gcc")
        try checkAgainstEngine(.host, images: 300)
    }

    func testGeneratedCMatchesTheEngineOnAnEmulatedCortexM0() throws {
        _ = try requireTool("arm-none-eabi-gcc")
        _ = try requireTool("qemu-system-arm")
        try checkAgainstEngine(.cortexM0, images: 100)
    }

    func testGeneratorRefusesWhatTheCCannotExpress() throws {
        let (model, _) = ExportTests.convModel()
        XCTAssertThrowsError(try CGenerator.generate(model, prefix: "9lives")) {
            XCTAssertTrue("\($0)".contains("not a C identifier"), "\($0)")
        }
        // 16-bit weights do not fit the 4-bit storage their layer claims.
        var narrow = model
        if case .conv(var c) = narrow.layers[3] { c.weightBits = BitWidth(4)!; narrow.layers[3] = .conv(c) }
        XCTAssertThrowsError(try CGenerator.generate(narrow)) {
            XCTAssertTrue("\($0)".contains("layer 3 (conv2d): weight"), "\($0)")
        }
        var bad = model
        bad.layers[1] = .maxPool(kernel: 2, stride: 2, padding: 5)
        XCTAssertThrowsError(try CGenerator.generate(bad)) {
            XCTAssertTrue("\($0)".contains("layer 1 (maxpool2d)"), "\($0)")
        }
        // An accumulator that could overflow int32 in C is refused, not left to wrap.
        var wide = ExportTests.denseModel().0
        if case .dense(var d) = wide.layers[0] { d.bias[0] = Int64(Int32.max); wide.layers[0] = .dense(d) }
        XCTAssertThrowsError(try CGenerator.generate(wide)) {
            XCTAssertTrue("\($0)".contains("exceed its 32-bit accumulator"), "\($0)")
        }
    }

    /// The symbols that make a Cortex-M build fail as not float-free, and integer helpers that do not.
    func testSoftFloatSymbolsAreRecognised() {
        func soft(_ name: String) -> Bool {
            ExportVerifier.softFloat.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        }
        for name in [
            "__aeabi_fmul", "__aeabi_f2iz", "__aeabi_i2d", "__aeabi_dadd", "__aeabi_l2f", "__addsf3",
            "__muldf3",
            "__floatsisf", "__fixdfsi", "__aeabi_ui2f"
        ] {
            XCTAssertTrue(soft(name), name)
        }
        for name in [
            "__aeabi_idiv", "__aeabi_lmul", "__aeabi_uldivmod", "__aeabi_llsl", "__aeabi_memcpy",
            "qshape_model_predict"
        ] {
            XCTAssertFalse(soft(name), name)
        }
    }

    func testMissingToolsNameTheirPackage() {
        XCTAssertThrowsError(try Tool.require("qshape-no-such-compiler", package: "gcc-arm-none-eabi")) {
            XCTAssertEqual(
                "\($0)", "qshape-no-such-compiler not found: install the Debian package gcc-arm-none-eabi")
        }
    }

    /// The command end to end on the fixture: files written, a non-empty folder refused without
    /// --force, replaced with it.
    func testExportCommandWritesTheLibraryAndRefusesANonEmptyFolder() throws {
        let dir = temporaryDirectory(self)
        let run = "\(dir)/run"
        let c = try Config.load(
            path: Fixtures.example("fashion-mlp.yaml"),
            overrides: ["data.dir=\(Fixtures.fashion)", "training.epochs=1", "training.max_steps_per_epoch=5"]
        )
        _ = try TrainWorkflow.run(c, outDir: run, force: false, observer: nil)
        let args = [
            "export", Fixtures.example("fashion-mlp.yaml"), "--set", "data.dir=\(Fixtures.fashion)",
            "--weights", "\(run)/model.safetensors", "--bits", "4", "--out", "\(dir)/c"
        ]
        let first = try qshape(args + ["--verify", "50", "--json"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(first.stdout.utf8)) as! [String: Any]
        let v = json["verification"] as! [String: Any]
        XCTAssertEqual(v["mismatching_images"] as? Int, 0)
        for f in [
            "model.h", "model.c", "qshape_nn.h", "qshape_nn.c", "main_host.c", "main_cortexm.c",
            "qs_driver.h",
            "Makefile", "cortex-m0.ld", "cortex-m3.ld"
        ] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/c/\(f)"), f)
        }
        let source =
            try String(contentsOfFile: "\(dir)/c/model.c", encoding: .utf8)
            + String(contentsOfFile: "\(dir)/c/qshape_nn.c", encoding: .utf8)
        for word in ["float", "double", "malloc"] { XCTAssertFalse(source.contains(word), word) }
        let again = try qshape(args)
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.hasPrefix("error: \(dir)/c is not empty: pass --force"), again.stderr)
        XCTAssertEqual(again.stderr.split(separator: "\n").count, 1)
        let forced = try qshape(args + ["--force", "--prefix", "fashion"])
        XCTAssertEqual(forced.status, 0, forced.stderr)
        XCTAssertTrue(
            try String(contentsOfFile: "\(dir)/c/model.h", encoding: .utf8).contains("int fashion_predict("))
        let badPrefix = try qshape(args + ["--force", "--prefix", "a-b"])
        XCTAssertEqual(badPrefix.status, 2)
        XCTAssertTrue(badPrefix.stderr.contains("not a C identifier"), badPrefix.stderr)
    }
}

func requireTool(_ name: String) throws -> String {
    do { return try Tool.require(name, package: name) } catch { throw XCTSkip("\(name) is not installed") }
}
