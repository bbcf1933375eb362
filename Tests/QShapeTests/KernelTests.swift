// Tests: the BLAS-backed kernels against their naive twins.
import XCTest
import Tensors

/// The BLAS-backed kernels against their naive twins on awkward shapes.
final class KernelTests: XCTestCase {
    func testGemmMatchesNaiveTwinForEveryTransposeAndAwkwardShapes() {
        for (m, n, k) in [(1, 1, 1), (1, 7, 3), (5, 1, 9), (13, 17, 19), (64, 3, 128), (2, 33, 1)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for (alpha, beta) in [(Float(1), Float(0)), (0.5, 2)] {
                        let a = randomTensor([m * k], seed: 1).data, b = randomTensor([k * n], seed: 2).data
                        let c0 = randomTensor([m * n], seed: 3).data
                        var fast = c0, slow = c0
                        let lda = ta ? m : k, ldb = tb ? k : n
                        fast.withUnsafeMutableBufferPointer { c in
                            gemm(
                                transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b,
                                ldb: ldb,
                                beta: beta, c: c.baseAddress!, ldc: n)
                        }
                        slow.withUnsafeMutableBufferPointer { c in
                            gemmNaive(
                                transA: ta, transB: tb, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b,
                                ldb: ldb,
                                beta: beta, c: c.baseAddress!, ldc: n)
                        }
                        for i in 0..<(m * n) {
                            XCTAssertEqual(
                                fast[i], slow[i], accuracy: 1e-4 * Float(k),
                                "m\(m) n\(n) k\(k) tA \(ta) tB \(tb)")
                        }
                    }
                }
            }
        }
    }

    /// The product split between the two workers (by rows, or by columns when C is wider than
    /// tall, halves rounded to 8) gives the naive twin's values, and leaves the BLAS thread count
    /// as it found it, split or whole.
    func testGemmOnWorkersMatchesNaiveTwinSplitOrWhole() {
        let before = BLASThreads.current
        defer { BLASThreads.set(before) }
        for threads in [1, 2] {
            BLASThreads.set(threads)
            for (m, n, k, minimum) in [
                (37, 20, 9, 1), (16, 45, 7, 1), (17, 16, 5, 1), (8, 9, 3, 1), (37, 20, 9, 1 << 20)
            ] {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a = randomTensor([m * k], seed: 6).data, b = randomTensor([k * n], seed: 7).data
                    var fast = randomTensor([m * n], seed: 8).data, slow = fast
                    let lda = ta ? m : k, ldb = tb ? k : n
                    fast.withUnsafeMutableBufferPointer { c in
                        gemmOnWorkers(
                            transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b,
                            ldb: ldb,
                            beta: 2, c: c.baseAddress!, ldc: n, minimum: minimum)
                    }
                    slow.withUnsafeMutableBufferPointer { c in
                        gemmNaive(
                            transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b,
                            ldb: ldb,
                            beta: 2, c: c.baseAddress!, ldc: n)
                    }
                    for i in 0..<(m * n) {
                        XCTAssertEqual(
                            fast[i], slow[i], accuracy: 1e-4 * Float(k), "m\(m) n\(n) k\(k) \(ta) \(tb)")
                    }
                    XCTAssertEqual(BLASThreads.current, threads)
                }
            }
        }
    }

    func testIm2colMatchesNaiveTwinAndCol2imIsItsAdjoint() {
        let cases = [
            (2, 3, 7, 6, 3, 2, 1), (1, 1, 5, 5, 1, 1, 0), (2, 2, 4, 9, 3, 1, 2), (1, 2, 8, 8, 2, 2, 0),
            (1, 1, 3, 3, 3, 3, 1), (2, 1, 6, 5, 5, 3, 2),
            // stride 1, "same" padding: the shifted-plane path
            (2, 3, 7, 6, 3, 1, 1), (2, 2, 5, 9, 5, 1, 2), (1, 1, 2, 2, 3, 1, 1), (3, 1, 1, 1, 3, 1, 1),
            (1, 2, 1, 4, 5, 1, 2), (2, 1, 3, 1, 5, 1, 2), (2, 1, 14, 14, 3, 1, 1)
        ]
        for (n, c, h, w, k, s, p) in cases {
            let g = ConvGeometry(
                batch: n, channels: c, height: h, width: w, kernelH: k, kernelW: k, stride: s, padding: p)
            let x = randomTensor([n * c * h * w], seed: 4).data
            var fast = [Float](repeating: .nan, count: g.patchSize * g.columns), slow = fast
            fast.withUnsafeMutableBufferPointer { im2col(g, input: x, cols: $0.baseAddress!) }
            slow.withUnsafeMutableBufferPointer { im2colNaive(g, input: x, cols: $0.baseAddress!) }
            XCTAssertEqual(fast, slow, "geometry \(g)")
            // ⟨im2col(x), r⟩ = ⟨x, col2im(r)⟩ for every x, r: col2im is the adjoint.
            let r = randomTensor([fast.count], seed: 5).data
            var back = [Float](repeating: 0, count: x.count), scratch = r
            scratch.withUnsafeMutableBufferPointer { rp in
                back.withUnsafeMutableBufferPointer {
                    col2im(g, cols: rp.baseAddress!, dInput: $0.baseAddress!)
                }
            }
            let lhs = zip(fast, r).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let rhs = zip(x, back).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            XCTAssertEqual(lhs, rhs, accuracy: 1e-4 * max(1, abs(lhs)))
        }
    }

    /// The direct convolution loops against their naive twin, im2col and the naive product: forward
    /// (O, N·OH·OW) and the weight gradient, added onto what dW held; rows of exactly eight
    /// positions, and of more with an overlapping last block.
    func testDirectConvolutionMatchesIm2colAndNaiveProduct() {
        // (batch, channels, height, width, kernel, padding, out)
        for (n, c, h, w, k, p, o) in [
            (3, 1, 9, 11, 3, 1, 5), (2, 2, 6, 8, 3, 1, 3), (1, 1, 8, 13, 5, 2, 2), (2, 3, 5, 10, 3, 0, 4),
            (1, 1, 4, 8, 1, 0, 1)
        ] {
            let g = ConvGeometry(
                batch: n, channels: c, height: h, width: w, kernelH: k, kernelW: k, stride: 1, padding: p)
            XCTAssertTrue(DirectConvolution.suits(g), "\(g)")
            let x = randomTensor([n * c * h * w], seed: 6).data,
                wt = randomTensor([o * g.patchSize], seed: 7).data
            let dOut = randomTensor([o * g.columns], seed: 8).data,
                dW0 = randomTensor([o * g.patchSize], seed: 9).data
            var cols = [Float](repeating: 0, count: g.patchSize * g.columns)
            cols.withUnsafeMutableBufferPointer { im2colNaive(g, input: x, cols: $0.baseAddress!) }
            var slow = [Float](repeating: 0, count: o * g.columns), slowDW = dW0
            slow.withUnsafeMutableBufferPointer {
                gemmNaive(
                    m: o, n: g.columns, k: g.patchSize, a: wt, lda: g.patchSize, b: cols, ldb: g.columns,
                    c: $0.baseAddress!, ldc: g.columns)
            }
            slowDW.withUnsafeMutableBufferPointer {
                gemmNaive(
                    transB: true, m: o, n: g.patchSize, k: g.columns, a: dOut, lda: g.columns, b: cols,
                    ldb: g.columns, beta: 1, c: $0.baseAddress!, ldc: g.patchSize)
            }
            var padded = [Float](repeating: .nan, count: DirectConvolution.paddedCount(g))
            var fast = [Float](repeating: .nan, count: o * g.columns), fastDW = dW0
            padded.withUnsafeMutableBufferPointer { pp in
                DirectConvolution.pad(g, input: x, into: pp.baseAddress!)
                DirectConvolution.forward(g, weights: wt, outChannels: o, padded: pp.baseAddress!, out: &fast)
                DirectConvolution.weightGradient(
                    g, dOut: dOut, outChannels: o, padded: pp.baseAddress!, dW: &fastDW)
            }
            for i in fast.indices {
                XCTAssertEqual(fast[i], slow[i], accuracy: 1e-5 * Float(g.patchSize), "\(g)")
            }
            for i in fastDW.indices {
                XCTAssertEqual(fastDW[i], slowDW[i], accuracy: 1e-5 * Float(g.columns), "dW \(g)")
            }
        }
        let strided = ConvGeometry(
            batch: 1, channels: 1, height: 20, width: 20, kernelH: 3, kernelW: 3, stride: 2, padding: 1)
        XCTAssertFalse(DirectConvolution.suits(strided))
        XCTAssertFalse(
            DirectConvolution.suits(
                ConvGeometry(
                    batch: 1, channels: 1, height: 7, width: 7, kernelH: 3, kernelW: 3, stride: 1, padding: 1)
            ))
    }

    func testSeededRandomIsReproducibleAndUnbiased() {
        var a = SeededRandom(seed: 5), b = SeededRandom(seed: 5)
        XCTAssertEqual((0..<10).map { _ in a.next() }, (0..<10).map { _ in b.next() })
        var counts = [Int](repeating: 0, count: 6)
        for _ in 0..<60_000 { counts[a.below(6)] += 1 }
        for c in counts { XCTAssertEqual(Double(c), 10_000, accuracy: 400) }
        var u = 0.0
        for _ in 0..<10_000 { u += Double(a.nextUnitFloat()) }
        XCTAssertEqual(u / 10_000, 0.5, accuracy: 0.01)
    }
}
