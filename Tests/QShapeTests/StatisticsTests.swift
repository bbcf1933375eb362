// Tests: statistics and the seed quantiser against SciPy and NumPy fixtures.
import XCTest
import Foundation
import DataIO
import Shaping
@testable import Quantization
import IntegerRuntime
@testable import Workflows
@testable import Config

/// Statistics against SciPy and the seed quantiser against NumPy, on committed fixtures
/// (Fixtures/make_stats_fixture.py).
final class StatisticsTests: XCTestCase {
    let names = ["normal", "uniform", "laplace", "skewed", "outlier", "ties"]

    func testMomentsAgreeWithSciPy() throws {
        let file = try SafeTensors.read("\(Fixtures.dir)/weight-fixtures.safetensors")
        let data = FileManager.default.contents(atPath: "\(Fixtures.dir)/weight-fixtures-stats.json")!
        let expected = try JSONSerialization.jsonObject(with: data) as! [String: [String: Any]]
        func close(_ a: Double, _ b: Double, _ what: String) {
            XCTAssertEqual(a, b, accuracy: 1e-5 * max(abs(b), 1e-3), what)
        }
        for name in names {
            let w = file[name]!.floats, rows = file[name]!.shape[0]
            let e = expected[name]!["tensor"] as! [String: Double]
            let st = WeightStatistics(w)
            close(st.mean, e["mean"]!, "\(name) mean"); close(st.std, e["std"]!, "\(name) std")
            close(st.skewness, e["skewness"]!, "\(name) skewness");
            close(st.kurtosis, e["kurtosis"]!, "\(name) kurtosis")
            close(st.maxAbsOverStd, e["max_abs_over_std"]!, "\(name) max/σ")
            let channels = expected[name]!["channels"] as! [[String: Double]]
            let size = w.count / rows
            for (c, ce) in channels.enumerated() {
                let cs = WeightStatistics(Array(w[(c * size)..<((c + 1) * size)]))
                close(cs.skewness, ce["skewness"]!, "\(name)[\(c)] skewness")
                close(cs.kurtosis, ce["kurtosis"]!, "\(name)[\(c)] kurtosis")
            }
        }
    }

    /// One bit: sign(w) ∈ {−1, +1} (+1 at 0) times α = mean|w| per group, the least-squares scale.
    func testBinaryWeightsAreSignTimesMeanMagnitude() {
        let w: [Float] = [0.3, -0.1, 0, -0.6, 2, -1, 0.5, -0.5]
        let perTensor = WeightQuantizer(bits: 1).quantize(w, shape: [2, 4])
        XCTAssertEqual(perTensor.values, [1, -1, 1, -1, 1, -1, 1, -1])
        XCTAssertEqual(perTensor.factors.count, 1)
        XCTAssertEqual(Double(perTensor.factors[0]), 8 / 5.0, accuracy: 1e-6)  // α = 5/8
        let perChannel = WeightQuantizer(bits: 1, perChannel: true).quantize(w, shape: [2, 4])
        XCTAssertEqual(Double(perChannel.factors[0]), 1 / 0.25, accuracy: 1e-6)
        XCTAssertEqual(Double(perChannel.factors[1]), 1 / 1.0, accuracy: 1e-6)
        // α = mean|w| minimises Σ(w − α·sign w)²: any other α is worse.
        func error(_ a: Double) -> Double {
            w.map {
                let d = Double($0) - a * ($0 < 0 ? -1 : 1); return d * d
            }.reduce(0, +)
        }
        for other in [0.5, 0.6, 0.65, 0.7, 0.8] { XCTAssertLessThanOrEqual(error(0.625), error(other)) }
        XCTAssertEqual(levelsUsed(perTensor), 2)
        XCTAssertEqual(BitWidth(1)?.qmax, 1)
        XCTAssertEqual(BitWidth(1)?.storageBits, 2)
        XCTAssertNil(BitWidth(0))
        // A group of zeros has no scale of its own: it stays 0, exact, with factor 1.
        let zeros = WeightQuantizer(bits: 1, perChannel: true).quantize([0, 0, 1, -3], shape: [2, 2])
        XCTAssertEqual(zeros.values, [0, 0, 1, -1])
        XCTAssertEqual(zeros.factors, [1, 0.5])
    }

    func testSeedQuantiserAgreesExactlyWithNumPy() throws {
        let file = try SafeTensors.read("\(Fixtures.dir)/weight-fixtures.safetensors")
        for name in names {
            for bits in [2, 3, 4, 8, 16] {
                // GPTQ needs a layer's inputs; on its own it is `nearest`, checked below.
                for rounding in Rounding.allCases where rounding != .gptq {
                    let e = file[name]!
                    let q = WeightQuantizer(bits: bits, rounding: rounding).quantize(e.floats, shape: e.shape)
                    let ref = file["\(name).q\(bits).\(rounding.rawValue)"]!.integers.map { Int32($0) }
                    XCTAssertEqual(q.values, ref, "\(name) \(bits) bits \(rounding.rawValue)")
                }
            }
        }
        XCTAssertEqual(
            WeightQuantizer(bits: 3, rounding: .gptq).quantize([3, 0.5, 1.5, -2.5], shape: [4]).values,
            [3, 1, 2, -3])
        // The ties fixture has exact halves: the three roundings differ there.
        let ties = WeightQuantizer(bits: 3).quantize([3, 0.5, 1.5, -2.5], shape: [4])
        XCTAssertEqual(ties.values, [3, 1, 2, -3])
        XCTAssertEqual(
            WeightQuantizer(bits: 3, rounding: .nearestEven).quantize([3, 0.5, 1.5, -2.5], shape: [4]).values,
            [3, 0, 2, -2])
        XCTAssertEqual(
            WeightQuantizer(bits: 3, rounding: .truncate).quantize([3, 0.5, 1.5, -2.5], shape: [4]).values,
            [3, 0, 1, -2])
    }

    func testStatsCommandOnPyTorchFile() throws {
        let r = try StatsWorkflow.run(
            path: "\(Fixtures.dir)/pytorch-mlp.safetensors", bits: 4, channels: true)
        XCTAssertEqual(r.tensors.map { $0.name ?? "" }, ["1.weight", "3.weight", "5.weight"])
        XCTAssertEqual(r.tensors[0].channels?.count, 256)
        let t = r.tensors[2]
        XCTAssertEqual(t.kurtosis, 1.8, accuracy: 0.15, "uniform initial weights")
        XCTAssertLessThanOrEqual(t.levelsUsed, 15)
        let dir = temporaryDirectory(self)
        let out = try qshape(
            ["stats", "\(Fixtures.dir)/pytorch-mlp.safetensors", "--json", "--bits", "3"], in: dir)
        XCTAssertEqual(out.status, 0)
        let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as! [String: Any]
        let first = (obj["tensors"] as! [[String: Any]])[0]
        for key in [
            "name", "shape", "mean", "std", "skewness", "kurtosis", "max_abs_over_std", "sqnr_db",
            "levels_used"
        ] {
            XCTAssertNotNil(first[key], key)
        }
    }
}

extension StatisticsTests {
    /// Levels used: the distinct integers of the quantised tensor, edge values of the grid included.
    func testLevelsUsedCountsDistinctGridValues() {
        let q = QuantizedTensor(bits: 3, shape: [8], values: [-3, -3, 3, 0, 1, 1, 3, -2], factors: [1])
        XCTAssertEqual(levelsUsed(q), 5)
        let wide = QuantizedTensor(bits: 16, shape: [4], values: [-32767, 32767, 0, -32767], factors: [1])
        XCTAssertEqual(levelsUsed(wide), 3)
    }
}
