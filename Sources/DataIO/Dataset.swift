// A labelled data set in memory (bytes or floats) and its normalised batches.
import Tensors
import CVectorMath

/// A data-set problem a user can fix: the message names the file and what is wrong.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How raw values become network inputs: `x = (raw·scale − mean) / std`.
public struct Normalization: Equatable, Sendable {
    public var scale: Float
    public var mean: Float
    public var std: Float
    public init(scale: Float = 1.0 / 255.0, mean: Float = 0, std: Float = 1) {
        self.scale = scale; self.mean = mean; self.std = std
    }
}

/// Labelled samples. Byte images stay bytes in memory (60,000 Fashion-MNIST images are 47 MB,
/// not 188 MB) and are converted to Float per batch.
public struct Dataset: Sendable {
    public enum Storage: Sendable {
        case bytes([UInt8])
        case floats([Float])
    }

    public let sampleShape: [Int]
    public let storage: Storage
    public let labels: [Int32]

    public init(sampleShape: [Int], storage: Storage, labels: [Int32]) {
        self.sampleShape = sampleShape
        self.storage = storage
        self.labels = labels
    }

    public var count: Int { labels.count }
    public var sampleSize: Int { sampleShape.reduce(1, *) }
    public var classCount: Int { Int(labels.max() ?? 0) + 1 }

    /// The samples at `indices`, in that order: inputs (B, sampleShape…) and labels.
    public func batch<C: Collection>(_ indices: C, normalization: Normalization) -> (Tensor, [Int32])
    where C.Element == Int {
        let rows = Array(indices), size = sampleSize
        let a = normalization.scale / normalization.std, b = -normalization.mean / normalization.std
        // Every value is written, so no zero-fill first; the storage is matched once, not per row.
        let x = Tensor(shape: [rows.count] + sampleShape) { xp in
            switch storage {
            case .bytes(let bytes): Dataset.gather(rows, size, from: bytes, into: xp) { Float($0) * a + b }
            case .floats(let floats): Dataset.gather(rows, size, from: floats, into: xp) { $0 * a + b }
            }
        }
        return (x, rows.map { labels[$0] })
    }

    /// Row `rows[r]` of `source` (rows of `size` values) through `convert` into row r of `out`,
    /// the next row asked for while this one is converted (the rows are scattered over the set).
    @inline(__always)
    static func gather<T>(
        _ rows: [Int], _ size: Int, from source: [T], into out: UnsafeMutableBufferPointer<Float>,
        _ convert: (T) -> Float
    ) {
        source.withUnsafeBufferPointer { sp in
            for (r, i) in rows.enumerated() {
                if r + 1 < rows.count {
                    qs_prefetch(sp.baseAddress! + rows[r + 1] * size, size * MemoryLayout<T>.stride)
                }
                let src = sp.baseAddress! + i * size, dst = out.baseAddress! + r * size
                for j in 0..<size { dst[j] = convert(src[j]) }
            }
        }
    }

    /// The raw unnormalised bytes of one sample, when stored as bytes (the integer engine's input).
    public func rawBytes(_ i: Int) -> ArraySlice<UInt8>? {
        guard case .bytes(let bytes) = storage else { return nil }
        return bytes[(i * sampleSize)..<((i + 1) * sampleSize)]
    }

    /// A contiguous slice of samples as a new data set.
    public func subset(_ range: Range<Int>) -> Dataset {
        let size = sampleSize
        let s: Storage
        switch storage {
        case .bytes(let v): s = .bytes(Array(v[(range.lowerBound * size)..<(range.upperBound * size)]))
        case .floats(let v): s = .floats(Array(v[(range.lowerBound * size)..<(range.upperBound * size)]))
        }
        return Dataset(sampleShape: sampleShape, storage: s, labels: Array(labels[range]))
    }

    /// The same samples viewed with another per-sample shape of equal size (e.g. 784 → 1×28×28).
    public func reshaped(_ shape: [Int]) -> Dataset {
        precondition(shape.reduce(1, *) == sampleSize)
        return Dataset(sampleShape: shape, storage: storage, labels: labels)
    }
}
