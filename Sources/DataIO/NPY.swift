// NumPy .npy arrays (versions 1–3, C order) with checked headers.
/// NumPy `.npy` arrays (format versions 1–3, C order): a magic string, a header length, a
/// Python-dict header `{'descr': '<f4', 'fortran_order': False, 'shape': (N, …)}`, then the data.
/// Supported element types: uint8 (`|u1`), int64 (`<i8`), int32 (`<i4`), float32 (`<f4`).
public enum NPY {
    public enum Values: Sendable {
        case uint8([UInt8]), int64([Int64]), int32([Int32]), float32([Float])
    }

    public struct Array: Sendable {
        public let shape: [Int]
        public let values: Values
    }

    public static func read(_ path: String) throws -> Array {
        let raw = try readMaybeGzip(path, limit: 12 + maxHeader)
        let (start, headerLength) = try headerSpan(raw, path: path)
        let header = String(decoding: raw[start..<(start + headerLength)], as: UTF8.self)
        guard let descr = field(header, "descr"), let fortran = field(header, "fortran_order"),
            let shapeText = field(header, "shape")
        else {
            throw DataError("\(path): malformed .npy header: \(header)")
        }
        guard fortran.hasPrefix("False") else {
            throw DataError("\(path): Fortran-order arrays are not supported; save with C order")
        }
        let shape = try parseShape(shapeText, path: path)
        let dtype = descr.trimming("'\" ")
        let width: Int
        switch dtype {
        case "|u1", "u1", "<u1": width = 1
        case "<i8": width = 8
        case "<i4": width = 4
        case "<f4": width = 4
        default:
            throw DataError(
                "\(path): dtype \(dtype) is not supported (uint8 |u1, int64 <i8, int32 <i4, float32 <f4)")
        }
        var bytesNeeded = width, overflow = false
        for d in shape where !overflow {
            (bytesNeeded, overflow) = bytesNeeded.multipliedReportingOverflow(by: d)
        }
        guard !overflow, bytesNeeded <= IDX.maxBytes else {
            throw DataError("\(path): shape \(shape) promises more than \(IDX.maxBytes >> 30) GiB of data")
        }
        let all = try readMaybeGzip(path, limit: start + headerLength + bytesNeeded + 1)
        let body = all[(start + headerLength)...]
        guard body.count == bytesNeeded else {
            throw DataError(
                "\(path): shape \(shape) needs \(bytesNeeded) bytes of data, file holds \(body.count > bytesNeeded ? "more" : "\(body.count)")"
            )
        }
        let values = decode(Swift.Array(body), dtype: dtype)
        return Array(shape: shape, values: values)
    }

    /// Where the header starts and how long it is, from the magic and the version's length field.
    static func headerSpan(_ raw: [UInt8], path: String) throws -> (start: Int, length: Int) {
        let magic: [UInt8] = [0x93] + Swift.Array("NUMPY".utf8)
        guard raw.count >= 10, Swift.Array(raw[0..<6]) == magic else {
            throw DataError("\(path): not a .npy file (bad magic)")
        }
        let major = raw[6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(raw[8]) | Int(raw[9]) << 8; start = 10
        } else if major == 2 || major == 3 {
            guard raw.count >= 12 else { throw DataError("\(path): truncated .npy header") }
            headerLength = Int(raw[8]) | Int(raw[9]) << 8 | Int(raw[10]) << 16 | Int(raw[11]) << 24;
            start = 12
        } else {
            throw DataError("\(path): .npy format version \(major) is not supported (1, 2 or 3)")
        }
        guard headerLength <= maxHeader, raw.count >= start + headerLength else {
            throw DataError("\(path): truncated .npy header (or longer than \(maxHeader) bytes)")
        }
        return (start, headerLength)
    }

    /// Little-endian array data as the dtype's values (uint8 for `|u1`).
    static func decode(_ bytes: [UInt8], dtype: String) -> Values {
        switch dtype {
        case "<i8":
            return .int64(
                bytes.withUnsafeBytes { Swift.Array($0.bindMemory(to: Int64.self)) }.map {
                    Int64(littleEndian: $0)
                })
        case "<i4":
            return .int32(
                bytes.withUnsafeBytes { Swift.Array($0.bindMemory(to: Int32.self)) }.map {
                    Int32(littleEndian: $0)
                })
        case "<f4":
            return .float32(
                bytes.withUnsafeBytes { Swift.Array($0.bindMemory(to: UInt32.self)) }.map {
                    Float(bitPattern: UInt32(littleEndian: $0))
                })
        default: return .uint8(bytes)
        }
    }

    /// The longest header QShape reads (NumPy writes a few hundred bytes).
    static let maxHeader = 1 << 20

    /// "(N, 28, 28)", "(N,)" or "()": whole non-negative dimensions, at most 8.
    static func parseShape(_ text: String, path: String) throws -> [Int] {
        let inner = text.prefix { $0 != ")" }.drop { $0 == "(" || $0 == " " }
        let parts = inner.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0).trimming(" ")
        }
        let dims = parts.enumerated().filter { !($0.element.isEmpty && $0.offset == parts.count - 1) }.map {
            Int($0.element)
        }
        guard text.hasPrefix("("), dims.count <= 8, dims.allSatisfy({ ($0 ?? -1) >= 0 }) else {
            throw DataError(
                "\(path): .npy shape \(text.prefix { $0 != ")" })) is not a tuple of whole non-negative sizes"
            )
        }
        return dims.map { $0! }
    }

    /// The text after `'key':` up to the next top-level comma.
    private static func field(_ header: String, _ key: String) -> String? {
        guard let r = header.range(of: "'\(key)':") else { return nil }
        var depth = 0, out = ""
        for ch in header[r.upperBound...] {
            if ch == "(" { depth += 1 }
            if ch == ")" { depth -= 1; if depth < 0 { break } }
            if ch == "," && depth == 0 { break }
            if ch == "}" && depth == 0 { break }
            out.append(ch)
        }
        return out.trimming(" ")
    }

    /// Images (N, …) and labels (N) as a data set.
    public static func dataset(images: String, labels: String) throws -> Dataset {
        let x = try read(images), y = try read(labels)
        guard x.shape.count >= 2 else { throw DataError("\(images): expected shape (N, …), got \(x.shape)") }
        guard y.shape.count == 1, y.shape[0] == x.shape[0] else {
            throw DataError("\(labels): expected \(x.shape[0]) labels of shape (N), got shape \(y.shape)")
        }
        let storage: Dataset.Storage
        switch x.values {
        case .uint8(let v): storage = .bytes(v)
        case .float32(let v): storage = .floats(v)
        case .int64(let v): storage = .floats(v.map { Float($0) })
        case .int32(let v): storage = .floats(v.map { Float($0) })
        }
        let labelValues: [Int64]
        switch y.values {
        case .uint8(let v): labelValues = v.map { Int64($0) }
        case .int64(let v): labelValues = v
        case .int32(let v): labelValues = v.map { Int64($0) }
        case .float32:
            throw DataError("\(labels): labels must be integers (uint8, int32 or int64), got float32")
        }
        return Dataset(
            sampleShape: Swift.Array(x.shape.dropFirst()), storage: storage,
            labels: try checkedLabels(labelValues, path: labels))
    }

    /// Encodes a uint8 or float32 array as .npy version 1 (used to write test fixtures).
    public static func encode(shape: [Int], values: Values) -> [UInt8] {
        let descr: String, data: [UInt8]
        switch values {
        case .uint8(let v): descr = "|u1"; data = v
        case .int64(let v):
            descr = "<i8"; data = v.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Swift.Array($0) } }
        case .int32(let v):
            descr = "<i4"; data = v.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Swift.Array($0) } }
        case .float32(let v):
            descr = "<f4";
            data = v.flatMap { x in withUnsafeBytes(of: x.bitPattern.littleEndian) { Swift.Array($0) } }
        }
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let n = header.utf8.count
        return [0x93] + Swift.Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xFF), UInt8(n >> 8)]
            + Swift.Array(header.utf8) + data
    }
}

func checkedLabels(_ values: [Int64], path: String) throws -> [Int32] {
    if let bad = values.first(where: { $0 < 0 || $0 > 65_535 }) {
        throw DataError("\(path): label \(bad) is out of range (class indices 0…65535)")
    }
    return values.map { Int32($0) }
}

extension String {
    func trimming(_ set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
