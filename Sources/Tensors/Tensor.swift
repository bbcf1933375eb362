// Tensor: a dense row-major Float array with a shape.
/// A dense array of Float32 values in row-major order with an explicit shape.
///
/// Images are NCHW: `(batch, channels, height, width)`. A `Tensor` is a value; layers keep
/// the ones they need for backward and write results through `withUnsafeMutableBufferPointer`
/// so hot loops never trigger copy-on-write.
public struct Tensor: Equatable, Sendable {
    public var shape: [Int]
    public var data: [Float]

    public init(shape: [Int], data: [Float]) {
        precondition(
            shape.reduce(1, *) == data.count,
            "Tensor shape \(shape) needs \(shape.reduce(1, *)) values, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    public init(shape: [Int], repeating value: Float = 0) {
        self.shape = shape
        self.data = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// A tensor whose every value `body` writes (no zero-fill first): for outputs of hot loops.
    public init(shape: [Int], uninitialized body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let n = shape.reduce(1, *)
        self.shape = shape
        self.data = [Float](unsafeUninitializedCapacity: n) { buffer, count in
            body(buffer)
            count = n
        }
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape) }

    public var count: Int { data.count }
    public var rank: Int { shape.count }

    /// The same values with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, data: data)
    }

    /// Sets every value to zero without reallocating.
    public mutating func zero() {
        data.withUnsafeMutableBufferPointer { p in
            p.update(repeating: 0)
        }
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try data.withUnsafeBufferPointer(body)
    }

    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        try data.withUnsafeMutableBufferPointer(body)
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = data.prefix(6).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(\(shape): [\(head)\(data.count > 6 ? ", …" : "")])"
    }
}
