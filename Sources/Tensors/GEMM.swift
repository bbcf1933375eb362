// Row-major SGEMM through OpenBLAS, the BLAS thread count, and the two workers that split a pass.
import CBLAS
import Dispatch

/// Row-major single-precision matrix multiply through OpenBLAS:
///
///     C (m, n) = alpha · op(A) (m, k) · op(B) (k, n) + beta · C
///
/// `op(X)` is `X` or `Xᵀ`; `lda`, `ldb`, `ldc` are the row strides of the stored matrices
/// (`A` is stored `(m, k)` or, when transposed, `(k, m)`). Cost: 2·m·n·k flops.
@inline(__always)
public func gemm(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor,
        transA ? CblasTrans : CblasNoTrans,
        transB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k), alpha,
        a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// `gemm` split between the two workers when BLAS has two or more threads and the product has at
/// least `minimum` multiply-adds: each computes half the rows (or, when C is wider than tall, half
/// the columns) of C with one BLAS thread; smaller products run whole on one BLAS thread. Dense
/// layers in networks with convolutions call this rather than let OpenBLAS thread a product
/// itself (`Dense.productsOnWorkers`): between products OpenBLAS's idle thread spins (for about
/// 2^28 cycles), and on two cores it took a fifth of the CPU time from the convolutions' workers
/// that ran next; the workers' threads sleep instead.
/// K is never split, so each element of C is one BLAS sum, the same for a given thread count.
/// `split: false` is plain `gemm`, OpenBLAS threading the product itself.
public func gemmOnWorkers(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    minimum: Int = 1 << 20, split: Bool = true
) {
    /// Rows i..<i+rows and columns j..<j+columns of C.
    func block(_ i: Int, _ rows: Int, _ j: Int, _ columns: Int) {
        gemm(
            transA: transA, transB: transB, m: rows, n: columns, k: k, alpha: alpha,
            a: a + (transA ? i : i * lda), lda: lda, b: b + (transB ? j * ldb : j), ldb: ldb,
            beta: beta, c: c + i * ldc + j, ldc: ldc)
    }
    guard BLASThreads.current > 1, split else { return block(0, m, 0, n) }
    guard m * n * k >= minimum, max(m, n) >= 16 else { return BLASThreads.one { block(0, m, 0, n) } }
    let byRows = m >= n, whole = byRows ? m : n, half = (whole / 2 + 7) / 8 * 8
    onTwoWorkers { w in
        let from = w == 0 ? 0 : half, count = w == 0 ? half : whole - half
        if byRows { block(from, count, 0, n) } else { block(0, m, from, count) }
    }
}

/// The naive twin of `gemm`: the same contract, three loops, Double accumulation.
/// Tests compare the BLAS path against it on awkward shapes.
public func gemmNaive(
    transA: Bool = false, transB: Bool = false,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var acc = 0.0
            for p in 0..<k {
                let av = transA ? a[p * lda + i] : a[i * lda + p]
                let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                acc += Double(av) * Double(bv)
            }
            let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
            c[i * ldc + j] = Float(Double(alpha) * acc + old)
        }
    }
}

/// OpenBLAS thread-pool size. Small matrices run faster on one thread on a 2-core machine;
/// `qshape bench` measures both.
public enum BLASThreads {
    public static func set(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var current: Int { Int(openblas_get_num_threads()) }

    /// `body` with one BLAS thread, the count restored after it.
    public static func one<R>(_ body: () -> R) -> R {
        let threads = current
        set(1)
        defer { set(threads) }
        return body()
    }
}

/// Runs `body(0)` and `body(1)`: on two threads, each with one BLAS thread, when BLAS has two or
/// more (OpenBLAS splitting the small products of a convolution's parts between its threads
/// scaled poorly); in turn otherwise. Callers make the result independent of which.
public func onTwoWorkers(_ body: (Int) -> Void) {
    guard BLASThreads.current > 1 else { return onTwoThreads(parallel: false, body) }
    BLASThreads.one { onTwoThreads(parallel: true, body) }
}

/// `body(0)` and `body(1)`: on two threads when `parallel`, in turn otherwise.
func onTwoThreads(parallel: Bool, _ body: (Int) -> Void) {
    guard parallel else {
        body(0)
        body(1)
        return
    }
    DispatchQueue.concurrentPerform(iterations: 2, execute: body)
}

/// `body` over 0..<count: in two halves on two workers (split at a multiple of `unit`) when BLAS
/// has two threads and there are at least `minimum` elements (below that, handing the work to
/// a second thread costs more than it saves); whole otherwise. For passes whose halves touch
/// disjoint memory, so the result does not depend on the split.
public func splitInTwo(_ count: Int, unit: Int = 1, minimum: Int = 1 << 17, _ body: (Range<Int>) -> Void) {
    guard count >= minimum, BLASThreads.current > 1, unit > 0 else { return body(0..<count) }
    let mid = min(count, (count / unit + 1) / 2 * unit)
    // No BLAS call in these passes: the BLAS thread count stays as it is.
    onTwoThreads(parallel: true) { w in body(w == 0 ? 0..<mid : mid..<count) }
}
