// Tests: the `qshape` executable as a user runs it (exit codes, one-line errors, files).
import XCTest
import Foundation
import IntegerRuntime
@testable import Benchmarks
@testable import Workflows
@testable import Config

/// The `qshape` command as a user runs it: exit codes, one-line errors, files left behind.
final class CommandLineTests: XCTestCase {
    func testBadConfigIsOneLineWithExitStatus2AndNoRunFolder() throws {
        let dir = temporaryDirectory(self)
        write(
            "model:\n  layers: [flatten, {type: dense, out: 10}]\ntraining: {batch_size: -4}\n",
            to: "\(dir)/bad.yaml")
        let r = try qshape(["train", "bad.yaml"], in: dir)
        XCTAssertEqual(r.status, 2)
        XCTAssertEqual(
            r.stderr,
            "error: bad.yaml:3: training.batch_size: expected a whole number in [1, 65536], got -4\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(dir)/runs"))
        let missing = try qshape(["train", "nope.yaml"], in: dir)
        XCTAssertEqual(missing.status, 2)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1)
    }

    /// Command-line mistakes are one line with exit status 2 too; help still prints in full.
    func testArgumentErrorsAreOneLineWithExitStatus2() throws {
        for args in [
            ["train"], ["quantize", "x.yaml"],
            ["export", "x.yaml", "--weights", "w", "--out", "o", "--bits", "0"],
            ["stats", "f", "--bits", "99"], ["no-such-command"]
        ] {
            let r = try qshape(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("error: "), r.stderr)
        }
        let help = try qshape(["export", "--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("--verify"), help.stdout)
    }

    func testTrainThenEvalJSONOnTheFixture() throws {
        let dir = temporaryDirectory(self)
        let sets = [
            "--set", "data.dir=\(Fixtures.fashion)", "--set", "training.epochs=1", "--set",
            "training.max_steps_per_epoch=4"
        ]
        let t = try qshape(["train", Fixtures.example("fashion-mlp.yaml")] + sets, in: dir)
        XCTAssertEqual(t.status, 0, t.stderr)
        XCTAssertTrue(t.stdout.contains("epoch 1/1"), "one line per epoch when not a terminal: \(t.stdout)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(dir)/runs/fashion-mlp/model.safetensors"))
        let again = try qshape(["train", Fixtures.example("fashion-mlp.yaml")] + sets, in: dir)
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("already exists"))
        let e = try qshape(
            [
                "eval", Fixtures.example("fashion-mlp.yaml"), "--weights",
                "runs/fashion-mlp/model.safetensors",
                "--json", "--set", "data.dir=\(Fixtures.fashion)"
            ], in: dir)
        XCTAssertEqual(e.status, 0, e.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
        XCTAssertNotNil(obj["test_accuracy"] as? Double)
        XCTAssertNotNil(obj["test_loss"] as? Double)
        let bad = try qshape(
            [
                "eval", Fixtures.example("fashion-mlp.yaml"), "--weights",
                Fixtures.example("fashion-mlp.yaml"),
                "--set", "data.dir=\(Fixtures.fashion)"
            ], in: dir)
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(
            bad.stderr.hasPrefix("error: \(Fixtures.example("fashion-mlp.yaml")): not a safetensors file"),
            bad.stderr)
    }

    /// `qshape bench --only` measures just the parts asked for; the JSON has every part's key.
    func testBenchOnlyInferenceJSON() throws {
        let r = try qshape(["bench", "--only", "inference", "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let inference = try XCTUnwrap(obj["inference"] as? [[String: Any]])
        XCTAssertEqual(inference.map { $0["network"] as? String }, ["fashion-mlp", "fashion-cnn"])
        for row in inference {
            XCTAssertGreaterThan(row["float_images_per_second"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(row["integer_images_per_second"] as? Double ?? 0, 0)
            XCTAssertEqual(row["integer_kernel"] as? String, IntegerEngine.kernelName)
        }
        // The estimate comes first, then the part announced with its own.
        let estimate = try XCTUnwrap(
            r.stderr.split(separator: "\n").first { $0.hasPrefix("estimated duration: about ") })
        XCTAssertTrue(estimate.contains("(1 part;"), String(estimate))
        XCTAssertTrue(r.stderr.contains("\ninference: about "), r.stderr)
        for part in ["sgemm", "training", "shaping", "penalty_costs", "memory", "profile", "advise"] {
            XCTAssertEqual((obj[part] as? [Any])?.count, 0, part)
        }
        let machine = try XCTUnwrap(obj["machine"] as? [String: Any])
        XCTAssertEqual((machine["blas"] as? [String: Any])?["library"] as? String, "OpenBLAS")
        XCTAssertNotEqual(try qshape(["bench", "--only", "everything"]).status, 0)
    }

    /// The profile times a step as training runs it: each convolution with its ReLU and pooling
    /// as one stage, every other layer alone, then the loss and the optimiser.
    func testProfileFollowsTheTrainingStages() throws {
        let specs = try XCTUnwrap(try BenchWorkflow.networks().first { $0.0 == "fashion-cnn" }?.1)
        let rows = try BenchWorkflow.profile(network: "fashion-cnn", layers: specs, steps: 1, batch: 4)
        XCTAssertEqual(
            rows.map(\.layer),
            [
                "0 conv2d+relu+maxpool2d", "3 conv2d+relu+maxpool2d", "6 flatten", "7 dense", "8 relu",
                "9 dense",
                "loss", "optimizer (adam)"
            ])
        XCTAssertNotNil(rows[1].forwardGFLOPS)
        XCTAssertNil(rows[2].forwardGFLOPS)
    }

    /// The memory part's measurement: the kernel's peak resident memory of a child process.
    func testChildPeakMemoryIsMeasured() throws {
        let exe = try qshapeExecutable().path
        let (status, kilobytes) = try BenchWorkflow.childPeakRSS(["--version"], executable: exe)
        XCTAssertEqual(status, 0)
        XCTAssertGreaterThan(kilobytes, 1_000)  // the Swift runtime and OpenBLAS alone take megabytes
        // The child's own peak (about 26 MB), not this process's, which a spawned child's ru_maxrss inherits.
        XCTAssertLessThan(kilobytes, 100_000)
        XCTAssertEqual(try BenchWorkflow.childPeakRSS(["no-such-command"], executable: exe).status, 2)
    }
}
