// The safetensors format: reading with every offset and size checked, and writing.
import Foundation

/// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`,
/// then the raw little-endian tensor data (offsets relative to the end of the header).
public enum SafeTensors {
    public enum DType: String, Sendable, CaseIterable {
        case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL
        public var size: Int {
            switch self {
            case .F64, .I64: 8
            case .F32, .I32: 4
            case .F16, .BF16, .I16: 2
            case .I8, .U8, .BOOL: 1
            }
        }
    }

    public struct Entry: Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let bytes: [UInt8]

        public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
            self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
        }

        public init(name: String, floats: [Float], shape: [Int]) {
            self.init(
                name: name, dtype: .F32, shape: shape,
                bytes: floats.withUnsafeBytes { Array($0) })
        }

        public init(name: String, int64: [Int64], shape: [Int]) {
            self.init(
                name: name, dtype: .I64, shape: shape,
                bytes: int64.map(\.littleEndian).withUnsafeBytes { Array($0) })
        }

        public var count: Int { shape.reduce(1, *) }

        /// The values as Float32 (converting F64, F16, BF16 and the integer types).
        public var floats: [Float] {
            bytes.withUnsafeBytes { raw -> [Float] in
                switch dtype {
                case .F32:
                    return (0..<count).map {
                        Float(
                            bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)
                                .littleEndian)
                    }
                case .F64:
                    return (0..<count).map {
                        Float(
                            Double(
                                bitPattern: raw.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self)
                                    .littleEndian))
                    }
                case .F16:
                    return (0..<count).map {
                        halfToFloat(raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian)
                    }
                case .BF16:
                    return (0..<count).map {
                        Float(
                            bitPattern: UInt32(
                                raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self).littleEndian) << 16
                        )
                    }
                default: return integers.map { Float($0) }
                }
            }
        }

        /// The values as Int64 (integer dtypes only; floats are truncated).
        public var integers: [Int64] {
            bytes.withUnsafeBytes { raw -> [Int64] in
                switch dtype {
                case .I64:
                    return (0..<count).map {
                        raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self).littleEndian
                    }
                case .I32:
                    return (0..<count).map {
                        Int64(raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self).littleEndian)
                    }
                case .I16:
                    return (0..<count).map {
                        Int64(raw.loadUnaligned(fromByteOffset: 2 * $0, as: Int16.self).littleEndian)
                    }
                case .I8: return (0..<count).map { Int64(raw.load(fromByteOffset: $0, as: Int8.self)) }
                case .U8, .BOOL:
                    return (0..<count).map { Int64(raw.load(fromByteOffset: $0, as: UInt8.self)) }
                default: return floats.map { Int64($0) }
                }
            }
        }
    }

    public struct File: Sendable {
        public var entries: [Entry]
        public var metadata: [String: String]
        public init(entries: [Entry], metadata: [String: String] = [:]) {
            self.entries = entries; self.metadata = metadata
        }
        public subscript(name: String) -> Entry? { entries.first { $0.name == name } }
    }

    /// Serialises tensors in the given order; the JSON header is padded with spaces to 8 bytes.
    public static func encode(_ file: File) -> [UInt8] {
        var header: [String: Any] = [:]
        var offset = 0
        for e in file.entries {
            header[e.name] = [
                "dtype": e.dtype.rawValue, "shape": e.shape, "data_offsets": [offset, offset + e.bytes.count]
            ]
            offset += e.bytes.count
        }
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        // Sorted keys: the same tensors always give the same bytes.
        var json =
            (try? JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])).map { [UInt8]($0) }
            ?? []
        while (json.count % 8) != 0 { json.append(0x20) }
        var out = withUnsafeBytes(of: UInt64(json.count).littleEndian) { [UInt8]($0) }
        out.reserveCapacity(8 + json.count + offset)
        out += json
        for e in file.entries { out += e.bytes }
        return out
    }

    public static func write(_ file: File, to path: String) throws {
        try writeAtomically(encode(file), to: path)
    }

    public static func read(_ path: String) throws -> File {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError("\(path): no such file or not readable")
        }
        return try decode([UInt8](data), path: path)
    }

    public static func decode(_ raw: [UInt8], path: String) throws -> File {
        guard raw.count >= 8 else {
            throw DataError("\(path): not a safetensors file (shorter than its 8-byte header length)")
        }
        let n = raw[0..<8].enumerated().reduce(UInt64(0)) {
            $0 | UInt64($1.element) << (8 * UInt64($1.offset))
        }
        guard n <= UInt64(raw.count - 8), n < 100_000_000 else {
            throw DataError(
                "\(path): not a safetensors file or truncated (header length \(n), file \(raw.count) bytes)")
        }
        let dataStart = 8 + Int(n)
        guard let object = try? JSONSerialization.jsonObject(with: Data(raw[8..<dataStart])),
            let header = object as? [String: Any]
        else {
            throw DataError("\(path): not a safetensors file (header is not a JSON object)")
        }
        var entries: [Entry] = []
        var metadata: [String: String] = [:]
        var spans: [(begin: Int, end: Int, name: String)] = []
        let dataLength = raw.count - dataStart
        for (name, value) in header {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            let (dtype, shape, begin, end) = try entry(name, value, dataLength: dataLength, path: path)
            spans.append((begin, end, name))
            entries.append(
                Entry(
                    name: name, dtype: dtype, shape: shape,
                    bytes: Array(raw[(dataStart + begin)..<(dataStart + end)])))
        }
        // The format: the tensors' bytes tile the data section, without gaps or overlaps.
        var position = 0
        for span in spans.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard span.begin == position else {
                throw DataError(
                    "\(path): tensor '\(span.name)' starts at byte \(span.begin) of the data, expected \(position) (tensors must not overlap or leave gaps)"
                )
            }
            position = span.end
        }
        guard position == dataLength else {
            throw DataError(
                "\(path): \(dataLength - position) bytes after the last tensor (the data section must end with it)"
            )
        }
        entries.sort { naturalLess($0.name, $1.name) }
        return File(entries: entries, metadata: metadata)
    }

    /// One tensor's header entry, checked: its dtype, its shape (whole sizes, at most 8), and its
    /// data offsets, inside the data section and exactly as long as dtype and shape say.
    static func entry(
        _ name: String, _ value: Any, dataLength: Int, path: String
    ) throws -> (DType, [Int], Int, Int) {
        guard !name.isEmpty else { throw DataError("\(path): a tensor has an empty name") }
        guard let info = value as? [String: Any], let dtypeName = info["dtype"] as? String,
            let shapeValues = info["shape"] as? [Any], let offsetValues = info["data_offsets"] as? [Any]
        else {
            throw DataError(
                "\(path): tensor '\(name)' has a malformed header entry (needs dtype, shape, data_offsets)")
        }
        guard let dtype = DType(rawValue: dtypeName) else {
            throw DataError(
                "\(path): tensor '\(name)' has unsupported dtype \(dtypeName) (supported: \(DType.allCases.map(\.rawValue).joined(separator: ", ")))"
            )
        }
        let shape = shapeValues.compactMap(SafeTensors.count),
            offsets = offsetValues.compactMap(SafeTensors.count)
        guard shape.count == shapeValues.count, shape.count <= 8 else {
            throw DataError(
                "\(path): tensor '\(name)' has shape \(shapeValues); dimensions must be whole numbers 0…2^48, at most 8 of them"
            )
        }
        guard offsets.count == 2, offsets.count == offsetValues.count else {
            throw DataError(
                "\(path): tensor '\(name)' has data_offsets \(offsetValues); expected two whole numbers [begin, end]"
            )
        }
        let begin = offsets[0], end = offsets[1]
        guard begin <= end, end <= dataLength else {
            throw DataError(
                "\(path): tensor '\(name)' lies outside the file's \(dataLength) data bytes (offsets \(begin)…\(end); truncated?)"
            )
        }
        var elements = 1, overflow = false
        for d in shape where !overflow { (elements, overflow) = elements.multipliedReportingOverflow(by: d) }
        let (bytes, overflow2) = elements.multipliedReportingOverflow(by: dtype.size)
        guard !overflow, !overflow2, bytes == end - begin else {
            throw DataError(
                "\(path): tensor '\(name)' of shape \(shape) and dtype \(dtypeName) needs \(overflow || overflow2 ? "more than 2^63" : "\(bytes)") bytes, header gives \(end - begin)"
            )
        }
        return (dtype, shape, begin, end)
    }

    /// A JSON number that is a whole count 0…2^48 (a size or an offset), or nil.
    static func count(_ value: Any) -> Int? {
        guard let n = value as? NSNumber else { return nil }
        let d = n.doubleValue
        guard d.isFinite, d >= 0, d <= 281_474_976_710_656, d == d.rounded(.towardZero) else { return nil }
        return Int(d)
    }
}

/// "2.weight" before "10.weight": numeric runs compare as numbers.
public func naturalLess(_ a: String, _ b: String) -> Bool {
    let pa = a.split(separator: ".", maxSplits: 1), pb = b.split(separator: ".", maxSplits: 1)
    if let fa = pa.first, let fb = pb.first, let ia = Int(fa), let ib = Int(fb), ia != ib { return ia < ib }
    return a < b
}

/// IEEE 754 binary16 → binary32.
func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h >> 15) << 31, exp = UInt32(h >> 10) & 0x1F, frac = UInt32(h) & 0x3FF
    if exp == 0 {
        let v = Float(frac) * (1.0 / 16_777_216.0)  // subnormal: frac · 2^-24
        return sign != 0 ? -v : v
    }
    if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (frac << 13)) }
    return Float(bitPattern: sign | ((exp + 112) << 23) | (frac << 13))
}
