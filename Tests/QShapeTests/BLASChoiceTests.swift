// Tests: the choice of OpenBLAS kernels per processor, and the start-up self-check.
import XCTest
import Foundation
import Tensors
@testable import Workflows
@testable import Config

/// Issue 16: OpenBLAS's kernels cannot silently fall back. The choice is tested as a function
/// (processor features, OpenBLAS's core and the environment in, a decision out); end to end only
/// as the environment leaves it (the tests never set OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE).
final class BLASChoiceTests: XCTestCase {
    let avx512: ProcessorFeatures = [.avx, .avx2, .fma, .osYMM, .avx512]
    let avx2: ProcessorFeatures = [.avx, .avx2, .fma, .osYMM]

    func testFallbackKernelsAreReplacedAndChoicesAreKept() {
        func decide(
            _ f: ProcessorFeatures, _ core: String, vendor: String = "GenuineIntel",
            _ env: [String: String] = [:]
        ) -> BLASCoreChoice.Decision {
            BLASCoreChoice.decide(features: f, vendor: vendor, libraryCore: core, environment: env)
        }
        func selected(_ d: BLASCoreChoice.Decision) -> String? {
            if case .select(let core, _) = d { return core }
            return nil
        }
        // The Xeon (AVX-512, AMX) on OpenBLAS 0.3.21: Prescott → SkylakeX.
        XCTAssertEqual(selected(decide(avx512.union(.amx), "Prescott")), "SkylakeX")
        XCTAssertEqual(selected(decide(avx2, "Core2")), "Haswell")
        XCTAssertEqual(selected(decide(avx2, "Prescott", vendor: "AuthenticAMD")), "Zen")
        XCTAssertEqual(selected(decide(avx512, "Sandybridge")), "SkylakeX")
        // OpenBLAS's own AVX2 or AVX-512 choices stand, and so does anything on a processor
        // without AVX, or a core QShape does not rank.
        for core in ["Haswell", "Zen", "SkylakeX", "Cooperlake"] {
            XCTAssertNil(selected(decide(avx512, core)), core)
        }
        XCTAssertEqual(selected(decide([.avx, .osYMM], "Prescott")), "Sandybridge")
        XCTAssertNil(selected(decide([], "Prescott")))
        XCTAssertNil(selected(decide(avx512, "SomethingNew")))
        // AVX registers the OS does not save are not usable.
        XCTAssertEqual(ProcessorFeatures([.avx, .avx2, .fma]).level, 0)
        XCTAssertEqual(avx2.union([.avx512f, .avx512bw, .avx512vl, .avx512dq, .avx512cd]).level, 2)
        XCTAssertEqual(avx512.level, 3)
        // Variables set on purpose are never overridden.
        for env in [
            ["OPENBLAS_CORETYPE": "Prescott"], ["OPENBLAS_L2_SIZE": "1048576"], ["QSHAPE_BLAS_SELECT": "off"]
        ] {
            XCTAssertEqual(
                decide(avx512, "Prescott", env),
                .keep(
                    reason: env.keys.first == "QSHAPE_BLAS_SELECT"
                        ? "QSHAPE_BLAS_SELECT=off" : "\(env.keys.first!) is set in the environment"))
        }
    }

    /// The kernels in use here compute what the naive product does.
    func testSelfCheckPassesOnTheKernelsInUse() {
        XCTAssertTrue(BLASCoreChoice.selfCheck(), BLASLibrary.coreName)
        XCTAssertTrue(BLASLibrary.config.hasPrefix("OpenBLAS "), BLASLibrary.config)
    }

    /// End to end, as the environment is: the run records its BLAS, and QShape's decision in the
    /// run agrees with the function's (a "BLAS:" line exactly when it changed the kernels).
    func testTrainRecordsTheKernelsItRanOn() throws {
        let env = ProcessInfo.processInfo.environment
        try XCTSkipIf(
            BLASCoreChoice.pinningVariables.contains { env[$0] != nil } || env["QSHAPE_BLAS_SELECT"] != nil,
            "OpenBLAS's kernels are pinned in this environment")
        let dir = temporaryDirectory(self)
        let r = try qshape([
            "train", Fixtures.example("fashion-mlp.yaml"), "--out", "\(dir)/run", "--set",
            "data.dir=\(Fixtures.fashion)",
            "--set", "training.epochs=1", "--set", "training.max_steps_per_epoch=2"
        ])
        XCTAssertEqual(r.status, 0, r.stderr)
        let p = try JSONDecoder().decode(
            Provenance.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dir)/run/provenance.json")))
        let here = Processor.current
        let decision = BLASCoreChoice.decide(
            features: here.features, vendor: here.vendor, libraryCore: BLASLibrary.coreName, environment: env)
        switch decision {
        case .keep:
            XCTAssertEqual(p.blas.core, BLASLibrary.coreName)
            XCTAssertEqual(p.blas.chosenBy, "OpenBLAS")
            XCTAssertFalse(r.stdout.contains("BLAS:"), r.stdout)
        case .select(let core, _):
            XCTAssertTrue(
                r.stdout.hasPrefix("BLAS: OpenBLAS chose \(BLASLibrary.coreName) kernels"), r.stdout)
            XCTAssertTrue([core, BLASLibrary.coreName].contains(p.blas.core), p.blas.core)
        }
        XCTAssertEqual(p.instructionSets, here.features.names)
        XCTAssertEqual(p.qshape, Provenance.version)
        // The data files' checksums (zlib's CRC-32 of the files as stored; Python's zlib.crc32 agrees).
        XCTAssertEqual(p.data?["train-labels-idx1-ubyte.gz"], "crc32 d364abfb, 1573 bytes")
        XCTAssertEqual(p.data?.count, 4)
        let report = try String(contentsOfFile: "\(dir)/run/report.md", encoding: .utf8)
        XCTAssertTrue(
            report.contains("| BLAS | OpenBLAS \(BLASLibrary.version), \(p.blas.core) kernels"), report)
    }
}
