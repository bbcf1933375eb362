// The width of a weight or activation integer, checked once where it enters (config, command line,
// file) and carried with what it describes.

/// A bit width of the symmetric signed grid −qmax…qmax, qmax = 2^(b−1) − 1: the seed quantiser's
/// `qf = qmax / max|W|`, a signed activation's range, the quantisation-error term's grid. One bit
/// is the binary grid {−1, +1} (no zero), whose qmax is 1.
public struct BitWidth: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The widths QShape quantises weights to.
    public static let allowed = 1...16
    /// "1…16", for messages.
    public static let allowedText = "\(allowed.lowerBound)…\(allowed.upperBound)"

    public let bits: Int

    /// nil when `bits` is outside `allowed`.
    public init?(_ bits: Int) {
        guard BitWidth.allowed.contains(bits) else { return nil }
        self.bits = bits
    }

    /// The largest magnitude on the grid.
    public var qmax: Int { BitWidth.qmax(bits) }

    /// 2^(b−1) − 1 for any b in 2…63 (activations use it at 8 and 16 bits, unsigned grids at b + 1);
    /// 1 for the binary grid of one bit.
    @inlinable
    public static func qmax(_ bits: Int) -> Int { bits == 1 ? 1 : (1 << (bits - 1)) - 1 }

    /// The bits a weight of this width takes in the exported C: packed 2 or 4 to a field (4 or 2
    /// per byte) up to 4 bits (binary weights in 2-bit fields), a byte up to 8, two bytes above.
    public var storageBits: Int {
        switch bits {
        case ...2: 2
        case ...4: 4
        case ...8: 8
        default: 16
        }
    }

    /// The flash bytes of `count` weights of this width, packed as the C export stores them.
    public func storageBytes(_ count: Int) -> Int { (count * storageBits + 7) / 8 }

    public static func < (a: BitWidth, b: BitWidth) -> Bool { a.bits < b.bits }
    public var description: String { "\(bits)-bit" }
}
