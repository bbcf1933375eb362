// `qshape stats`: each weight tensor's distribution and what the seed quantiser makes of it.
import Config
import Foundation
import DataIO
import Shaping
import Quantization

/// `qshape stats`: the distribution of every weight tensor of a safetensors file, and what the
/// seed quantiser makes of it at a bit width.
public enum StatsWorkflow {
    public struct Row: Codable, Sendable {
        public var name: String?
        public var channel: Int?
        public var shape: [Int]?
        public var count: Int
        public var mean, std, skewness, kurtosis: Double
        public var maxAbs: Double
        public var maxAbsOverStd: Double
        public var bits: Int
        /// SQNR of the per-tensor (per-channel for channel rows) seed quantiser, dB.
        public var sqnrDB: Double
        public var levelsUsed: Int
        public var levelsAvailable: Int
        public var channels: [Row]?

        enum CodingKeys: String, CodingKey {
            case name, channel, shape, count, mean, std, skewness, kurtosis, bits, channels
            case maxAbs = "max_abs", maxAbsOverStd = "max_abs_over_std", sqnrDB = "sqnr_db"
            case levelsUsed = "levels_used", levelsAvailable = "levels_available"
        }
    }

    public struct Result: Codable, Sendable {
        public var file: String
        public var tensors: [Row]
    }

    /// The statistics of a set of weights and what the seed quantiser makes of them at `bits`
    /// (per tensor): the one computation behind `qshape stats`, the run logs and the reports.
    static func row(_ w: [Float], bits: Int) -> Row {
        let st = WeightStatistics(w), q = SeedQuantization(w, bits: bits)
        return Row(
            count: w.count, mean: st.mean, std: st.std, skewness: st.skewness, kurtosis: st.kurtosis,
            maxAbs: st.maxAbs, maxAbsOverStd: st.maxAbsOverStd, bits: bits, sqnrDB: q.sqnrDB,
            levelsUsed: q.levelsUsed, levelsAvailable: q.levelsAvailable)
    }

    /// Statistics of every floating-point tensor of rank ≥ 2 (weights; biases and running
    /// statistics are skipped), per tensor and, with `channels`, per output channel.
    public static func run(path: String, bits: Int, channels: Bool) throws -> Result {
        let file = try SafeTensors.read(path)
        var rows: [Row] = []
        for e in file.entries where e.shape.count >= 2 && [.F32, .F64, .F16, .BF16].contains(e.dtype) {
            let w = e.floats
            try Weights.checkFinite(w, tensor: e.name, path: path)
            var r = row(w, bits: bits)
            r.name = e.name
            r.shape = e.shape
            if channels {
                let size = w.count / max(1, e.shape[0])
                r.channels = (0..<e.shape[0]).map { c in
                    var cr = row(Array(w[(c * size)..<((c + 1) * size)]), bits: bits)
                    cr.channel = c
                    return cr
                }
            }
            rows.append(r)
        }
        guard !rows.isEmpty else {
            throw DataError("\(path) holds no weight tensors (floating point, rank ≥ 2)")
        }
        return Result(file: path, tensors: rows)
    }

    /// A fixed-width table for the terminal.
    public static func table(_ r: Result) -> String {
        let bits = r.tensors.first?.bits ?? 8
        var lines = [
            pad("tensor", 16) + pad("shape", 14) + pad("mean", 10, right: true) + pad("std", 9, right: true)
                + pad("skew", 8, right: true) + pad("kurt", 8, right: true) + pad("max/σ", 7, right: true)
                + pad("SQNR@\(bits)b", 11, right: true) + pad("levels", 12, right: true)
        ]
        func line(_ label: String, _ shape: String, _ x: Row) -> String {
            pad(label, 16) + pad(shape, 14)
                + String(
                    format: "%10.5f%9.5f%8.3f%8.3f%7.2f%8.1f dB%7d/%-4d",
                    x.mean, x.std, x.skewness, x.kurtosis, x.maxAbsOverStd,
                    x.sqnrDB, x.levelsUsed, x.levelsAvailable)
        }
        for t in r.tensors {
            lines.append(
                line(t.name ?? "", "[" + (t.shape ?? []).map(String.init).joined(separator: ", ") + "]", t))
            for c in t.channels ?? [] { lines.append(line("  channel \(c.channel ?? 0)", "", c)) }
        }
        return lines.joined(separator: "\n")
    }
}

/// `s` padded with spaces to `width` characters (on the left when `right`).
func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}
