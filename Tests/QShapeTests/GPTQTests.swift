// Tests: GPTQ rounding — its Hessian, its factorisation, a case worked by hand, and its output
// error against nearest rounding and the exhaustive optimum on small layers.
import XCTest
import Tensors
import NeuralNet
@testable import Quantization

final class GPTQTests: XCTestCase {
    /// E(ŵ) = Σ_rows (w − ŵ)ᵀ H (w − ŵ): the layer's mean squared output error.
    func outputError(_ w: [Float], _ q: [Int32], factors: [Float], rows: Int, _ h: [Double]) -> Double {
        let k = w.count / rows
        var e = 0.0
        for r in 0..<rows {
            let qf = Double(factors.count == 1 ? factors[0] : factors[r])
            let d = (0..<k).map { Double(w[r * k + $0]) - Double(q[r * k + $0]) / qf }
            for i in 0..<k { for j in 0..<k { e += d[i] * h[i * k + j] * d[j] } }
        }
        return e
    }

    /// Inputs whose columns are correlated: x_j = z + noise, as a layer's inputs are.
    func correlatedInputs(n: Int, k: Int, seed: UInt64) -> Tensor {
        let z = randomTensor([n], seed: seed), noise = randomTensor([n, k], seed: seed + 1, scale: 0.4)
        return Tensor(shape: [n, k], data: (0..<(n * k)).map { z.data[$0 / k] + noise.data[$0] })
    }

    func testHessianOfDenseAndConvInputs() {
        let x = correlatedInputs(n: 30, k: 5, seed: 1)
        let h = GPTQ.hessian(.dense(inFeatures: 5, outFeatures: 2, bias: true), inputs: [x])
        for i in 0..<5 {
            for j in 0..<5 {
                let direct = (0..<30).reduce(0.0) {
                    $0 + Double(x.data[$1 * 5 + i]) * Double(x.data[$1 * 5 + j])
                }
                XCTAssertEqual(h[i * 5 + j], direct / 30, accuracy: 1e-5)
            }
        }
        // A conv's H is the dense H of its input patches, taken from the naive im2col.
        let image = randomTensor([2, 2, 4, 4], seed: 3)
        let spec = LayerSpec.conv2d(
            inChannels: 2, outChannels: 3, kernel: 3, stride: 1, padding: 1, bias: true)
        let g = ConvGeometry(
            batch: 2, channels: 2, height: 4, width: 4, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
        var cols = [Float](repeating: 0, count: g.patchSize * g.columns)
        image.data.withUnsafeBufferPointer { i in
            cols.withUnsafeMutableBufferPointer {
                im2colNaive(g, input: i.baseAddress!, cols: $0.baseAddress!)
            }
        }
        let patches = Tensor(
            shape: [g.columns, g.patchSize],
            data: (0..<(g.columns * g.patchSize)).map {
                cols[($0 % g.patchSize) * g.columns + $0 / g.patchSize]
            })
        let conv = GPTQ.hessian(spec, inputs: [image]),
            dense = GPTQ.hessian(.dense(inFeatures: 18, outFeatures: 3, bias: true), inputs: [patches])
        for (a, b) in zip(conv, dense) { XCTAssertEqual(a, b, accuracy: 1e-5) }
    }

    func testInverseCholeskyFactor() throws {
        let x = correlatedInputs(n: 40, k: 6, seed: 5)
        var h = GPTQ.hessian(.dense(inFeatures: 6, outFeatures: 1, bias: false), inputs: [x])
        for i in 0..<6 { h[i * 6 + i] += 0.01 }
        let u = try XCTUnwrap(GPTQ.inverseCholeskyUpper(h, 6))
        // U is upper triangular and (UᵀU)·H = I.
        for i in 0..<6 {
            for j in 0..<i { XCTAssertEqual(u[i * 6 + j], 0) }
            for j in 0..<6 {
                var s = 0.0
                for m in 0..<6 {
                    let utu = (0..<6).reduce(0.0) { $0 + u[$1 * 6 + i] * u[$1 * 6 + m] }
                    s += utu * h[m * 6 + j]
                }
                XCTAssertEqual(s, i == j ? 1 : 0, accuracy: 1e-8)
            }
        }
        XCTAssertNil(GPTQ.inverseCholeskyUpper([1, 2, 2, 1], 2), "not positive definite")
    }

    /// Two inputs that are nearly the same signal, weights (0.3, 0.3) and a grid step of 1: nearest
    /// rounding gives (0, 0) and loses 0.6·x of the output. GPTQ rounds the first to 0, moves its
    /// error 0.3 onto the second (0.3 + 0.3 ≈ 0.6), which rounds to 1: the output is off by
    /// (0.3 − 0.7)·x = −0.4·x, so E drops from 0.36·E[x²] to 0.16·E[x²].
    func testWorkedCaseRoundsOneWeightUp() throws {
        let x = correlatedInputs(n: 200, k: 2, seed: 9)
        let nearlySame = Tensor(
            shape: [200, 2],
            data: (0..<400).map { x.data[($0 / 2) * 2] + ($0 % 2 == 1 ? 0.01 * x.data[$0] : 0) })
        let h = GPTQ.hessian(.dense(inFeatures: 2, outFeatures: 1, bias: false), inputs: [nearlySame])
        let q = try XCTUnwrap(
            GPTQ.round([0.3, 0.3], rows: 1, hessian: h, factors: [1], quantizer: WeightQuantizer(bits: 2)))
        XCTAssertEqual(q.reduce(0, +), 1, "one of the two rounds up to 1")
        let ex2 = h[0]
        XCTAssertEqual(outputError([0.3, 0.3], [0, 0], factors: [1], rows: 1, h) / ex2, 0.36, accuracy: 0.01)
        XCTAssertEqual(outputError([0.3, 0.3], q, factors: [1], rows: 1, h) / ex2, 0.16, accuracy: 0.01)
    }

    /// On random small layers GPTQ's output error lies between the exhaustive optimum over the grid
    /// and nearest rounding's, and is well below nearest's on average.
    func testOutputErrorBetweenOptimumAndNearest() throws {
        var ratio = 0.0
        let trials = 30, rows = 3, k = 5
        for t in 0..<trials {
            let bits = t % 2 == 0 ? 2 : 3, x = correlatedInputs(n: 64, k: k, seed: UInt64(100 + t))
            let h = GPTQ.hessian(.dense(inFeatures: k, outFeatures: rows, bias: false), inputs: [x])
            let w = randomTensor([rows, k], seed: UInt64(200 + t), scale: 0.5).data
            let quantizer = WeightQuantizer(bits: bits, perChannel: t % 4 < 2)
            let nearest = quantizer.quantize(w, shape: [rows, k])
            let q = try XCTUnwrap(
                GPTQ.round(w, rows: rows, hessian: h, factors: nearest.factors, quantizer: quantizer))
            XCTAssertTrue(q.allSatisfy { abs($0) <= Int32(nearest.qmaxValue) })
            let eNearest = outputError(w, nearest.values, factors: nearest.factors, rows: rows, h)
            let eGPTQ = outputError(w, q, factors: nearest.factors, rows: rows, h)
            let eBest = optimum(w, factors: nearest.factors, rows: rows, qmax: nearest.qmaxValue, h)
            XCTAssertLessThanOrEqual(eBest, eGPTQ * (1 + 1e-9), "trial \(t)")
            XCTAssertLessThanOrEqual(eGPTQ, eNearest * (1 + 1e-9), "trial \(t)")
            ratio += eGPTQ / eNearest / Double(trials)
        }
        XCTAssertLessThan(ratio, 0.8, "mean output error relative to nearest rounding")
    }

    /// `quantize.rounding: gptq` in the converter: the same grid as nearest rounding, other
    /// integers, and a smaller output error of the layer on the calibration inputs.
    func testConverterRoundsWithTheCalibrationInputs() throws {
        let model = try Sequential(
            specs: [
                .dense(inFeatures: 12, outFeatures: 6, bias: true), .relu,
                .dense(inFeatures: 6, outFeatures: 3, bias: true)
            ],
            inputShape: [12], seed: 2)
        let x = correlatedInputs(n: 96, k: 12, seed: 4)
        func convert(_ rounding: Rounding) throws -> Conversion {
            var o = QuantizeOptions()
            o.weightBits = 3
            o.rounding = rounding
            return try Converter.convert(model, calibration: [x], inputScale: 1, rawInputMax: 255, options: o)
        }
        let nearest = try convert(.nearest), gptq = try convert(.gptq)
        XCTAssertEqual(nearest.layers[0].weightScales, gptq.layers[0].weightScales)
        let w = model.layers[0].state.first { $0.role == .weight }!.value.data
        let h = GPTQ.hessian(.dense(inFeatures: 12, outFeatures: 6, bias: true), inputs: [x])
        func error(_ c: Conversion) -> Double {
            let d = c.dequantized["0.weight"]!.data
            let q = d.map { Int32(($0 / Float(c.layers[0].weightScales[0])).rounded()) }
            return outputError(w, q, factors: [Float(1 / c.layers[0].weightScales[0])], rows: 6, h)
        }
        XCTAssertNotEqual(nearest.dequantized["0.weight"], gptq.dequantized["0.weight"])
        XCTAssertLessThan(error(gptq), error(nearest))
    }

    /// The least E over every assignment of grid integers, row by row (rows are independent).
    func optimum(_ w: [Float], factors: [Float], rows: Int, qmax: Int, _ h: [Double]) -> Double {
        let k = w.count / rows, levels = 2 * qmax + 1
        var total = 0.0
        for r in 0..<rows {
            var best = Double.infinity
            for code in 0..<Int(pow(Double(levels), Double(k))) {
                var c = code, q = [Int32](repeating: 0, count: w.count)
                for j in 0..<k { q[r * k + j] = Int32(c % levels - qmax); c /= levels }
                var wr = [Float](repeating: 0, count: w.count)
                for j in 0..<k { wr[r * k + j] = w[r * k + j] }
                best = min(best, outputError(wr, q, factors: factors, rows: rows, h))
            }
            total += best
        }
        return total
    }
}
