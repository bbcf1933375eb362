// The C element types of the exported model: how activations are stored between layers and how
// weights are stored in flash (int8/int16, or packed 4 and 2 bits a weight).
import IntegerRuntime

/// The storage of one activation buffer: the narrowest C type that holds every value a layer
/// can write (its clamp range). 8-bit activations travel as uint8/int8, 16-bit ones as int16.
enum ActivationType: String, Equatable {
    case u8, i8, i16

    static func fitting(_ lo: Int64, _ hi: Int64) -> ActivationType {
        if lo >= 0 && hi <= 255 { return .u8 }
        if lo >= -128 && hi <= 127 { return .i8 }
        return .i16
    }

    var cName: String {
        switch self {
        case .u8: "uint8_t"
        case .i8: "int8_t"
        case .i16: "int16_t"
        }
    }
    var bytes: Int { self == .i16 ? 2 : 1 }
    var range: (lo: Int64, hi: Int64) {
        switch self {
        case .u8: (0, 255)
        case .i8: (-128, 127)
        case .i16: (-32768, 32767)
        }
    }
}

/// How a layer's weights sit in flash. Packed formats hold two's-complement fields, the first
/// weight in the lowest bits of the first byte (CMSIS-NN's s4 order); a row need not start on a
/// byte boundary. 3-bit weights use 4-bit fields (see Docs/Deploy.md for the measurement).
enum WeightFormat: String, Equatable {
    case p2, p4, i8, i16

    /// The format for weights quantised to `bits` (1…16).
    static func forBits(_ bits: Int) -> WeightFormat {
        switch BitWidth(max(bits, BitWidth.allowed.lowerBound))!.storageBits {
        case 2: .p2
        case 4: .p4
        case 8: .i8
        default: .i16
        }
    }

    /// Field width in bits.
    var fieldBits: Int {
        switch self {
        case .p2: 2
        case .p4: 4
        case .i8: 8
        case .i16: 16
        }
    }
    var range: (lo: Int32, hi: Int32) {
        let half = Int32(1) << Int32(fieldBits - 1)
        return (-half, half - 1)
    }
    var cElement: String { self == .i16 ? "int16_t" : self == .i8 ? "int8_t" : "uint8_t" }

    /// Bytes of `count` weights.
    func storageBytes(_ count: Int) -> Int { (count * fieldBits + 7) / 8 }

    /// The weights as the C array's elements (bytes for packed formats).
    func pack(_ w: [Int16]) -> [Int64] {
        switch self {
        case .i8, .i16: return w.map(Int64.init)
        case .p2, .p4:
            let perByte = 8 / fieldBits, mask = Int64((1 << fieldBits) - 1)
            var out = [Int64](repeating: 0, count: storageBytes(w.count))
            for (i, v) in w.enumerated() {
                out[i / perByte] |= (Int64(v) & mask) << Int64((i % perByte) * fieldBits)
            }
            return out
        }
    }

    /// The inverse of `pack`, as the C reads a field: (field ^ sign) − sign.
    func unpack(_ bytes: [Int64], count: Int) -> [Int16] {
        switch self {
        case .i8, .i16: return bytes.prefix(count).map { Int16($0) }
        case .p2, .p4:
            let perByte = 8 / fieldBits, mask = Int64((1 << fieldBits) - 1),
                sign = Int64(1 << (fieldBits - 1))
            return (0..<count).map { i in
                let field = (bytes[i / perByte] >> Int64((i % perByte) * fieldBits)) & mask
                return Int16((field ^ sign) - sign)
            }
        }
    }
}

/// A failure to express a model in the C runtime (the message names the layer).
public struct ExportError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
