// IDX files (MNIST, Fashion-MNIST), plain or gzip, with checked headers.
/// IDX files (MNIST / Fashion-MNIST), plain or gzip: a 4-byte magic `0x00 0x00 type rank`, `rank`
/// big-endian UInt32 dimensions, then the values. QShape reads type 0x08 (unsigned byte).
public enum IDX {
    public struct Array: Sendable {
        public let dimensions: [Int]
        public let bytes: [UInt8]
    }

    /// The largest IDX file QShape reads (values, after decompression): 4 GiB.
    public static let maxBytes = 1 << 32

    /// Reads the header first, then at most the values it promises (checked arithmetic, capped
    /// at `maxBytes`), so a hostile size or a gzip bomb is refused before it is unpacked.
    public static func read(_ path: String) throws -> Array {
        let head = try readMaybeGzip(path, limit: 4 + 4 * 255)
        guard head.count >= 4, head[0] == 0, head[1] == 0 else {
            throw DataError("\(path): not an IDX file (bad magic number)")
        }
        guard head[2] == 0x08 else {
            throw DataError(
                "\(path): IDX element type 0x\(String(head[2], radix: 16)) is not supported (only unsigned byte, 0x08)"
            )
        }
        let rank = Int(head[3])
        guard rank >= 1, head.count >= 4 + 4 * rank else { throw DataError("\(path): truncated IDX header") }
        var dims: [Int] = []
        var expected = 1
        for d in 0..<rank {
            let o = 4 + 4 * d
            let size = Int(head[o]) << 24 | Int(head[o + 1]) << 16 | Int(head[o + 2]) << 8 | Int(head[o + 3])
            dims.append(size)
            let (product, overflow) = expected.multipliedReportingOverflow(by: size)
            guard !overflow, product <= maxBytes else {
                throw DataError(
                    "\(path): IDX dimensions \(dims) promise more than \(maxBytes >> 30) GiB of values")
            }
            expected = product
        }
        let header = 4 + 4 * rank
        let raw = try readMaybeGzip(path, limit: header + expected + 1)
        guard raw.count - header == expected else {
            throw DataError(
                "\(path): IDX header promises \(expected) values, file holds \(raw.count - header > expected ? "more" : "\(raw.count - header)") (truncated or not IDX?)"
            )
        }
        return Array(dimensions: dims, bytes: [UInt8](raw[header...]))
    }

    /// Images (N, H, W) and labels (N) as a data set of (1, H, W) byte samples.
    public static func dataset(images: String, labels: String) throws -> Dataset {
        let x = try read(images), y = try read(labels)
        guard x.dimensions.count == 3 else {
            throw DataError("\(images): expected images of rank 3 (N, H, W), got dimensions \(x.dimensions)")
        }
        guard y.dimensions.count == 1 else {
            throw DataError("\(labels): expected labels of rank 1, got dimensions \(y.dimensions)")
        }
        guard x.dimensions[0] == y.dimensions[0] else {
            throw DataError(
                "\(images) holds \(x.dimensions[0]) images but \(labels) holds \(y.dimensions[0]) labels")
        }
        return Dataset(
            sampleShape: [1, x.dimensions[1], x.dimensions[2]], storage: .bytes(x.bytes),
            labels: y.bytes.map { Int32($0) })
    }

    /// Encodes an unsigned-byte IDX array (used to write test fixtures).
    public static func encode(dimensions: [Int], bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0, 0, 0x08, UInt8(dimensions.count)]
        for d in dimensions {
            out += [UInt8(d >> 24 & 0xFF), UInt8(d >> 16 & 0xFF), UInt8(d >> 8 & 0xFF), UInt8(d & 0xFF)]
        }
        return out + bytes
    }
}
