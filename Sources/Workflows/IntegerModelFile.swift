// The integer model as safetensors (model-int<b>.safetensors): writing it, and reading it back
// with every width and value checked.
import Config
import Foundation
import DataIO
import IntegerRuntime

/// A converted model as safetensors with integer dtypes: per layer `<i>.weight` (I8, or I16 above
/// 8 bits), `<i>.bias` (I32, or I64 when a value needs it), `<i>.multiplier` (I32, or I64),
/// `<i>.shift` (I32); the layer list, geometry, clamps and accumulator widths in the metadata
/// entry `qshape.integer_model` (JSON), with the real scales beside them for reference.
public enum IntegerModelFile {
    struct LayerInfo: Codable {
        var type: String
        var inFeatures: Int?, outFeatures: Int?
        var inChannels: Int?, outChannels: Int?, kernel: Int?, stride: Int?, padding: Int?
        var outMin: Int64?, outMax: Int64?, accumulatorBits: Int?, weightBits: Int?
        var lo: Int64?, hi: Int64?
    }
    struct Info: Codable {
        var format = "qshape.integer_model.v1"
        var inputShape: [Int]
        var layers: [LayerInfo]
    }

    static func entry(
        _ name: String, _ v: [Int64], shape: [Int], narrow: SafeTensors.DType
    ) -> SafeTensors.Entry {
        let fitsNarrow: Bool
        switch narrow {
        case .I8: fitsNarrow = v.allSatisfy { $0 >= -128 && $0 <= 127 }
        case .I16: fitsNarrow = v.allSatisfy { $0 >= -32768 && $0 <= 32767 }
        default: fitsNarrow = v.allSatisfy { $0 >= Int64(Int32.min) && $0 <= Int64(Int32.max) }
        }
        let dtype = fitsNarrow ? narrow : .I64
        var bytes: [UInt8] = []
        bytes.reserveCapacity(v.count * dtype.size)
        for x in v {
            switch dtype {
            case .I8: bytes.append(UInt8(bitPattern: Int8(x)))
            case .I16: withUnsafeBytes(of: Int16(x).littleEndian) { bytes += $0 }
            case .I32: withUnsafeBytes(of: Int32(x).littleEndian) { bytes += $0 }
            default: withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
            }
        }
        return SafeTensors.Entry(name: name, dtype: dtype, shape: shape, bytes: bytes)
    }

    /// Writes `model`; each weight tensor is I8 up to 8 bits, else I16, as its layer's width says.
    public static func save(_ model: IntegerModel, scales: [String: String] = [:], to path: String) throws {
        var entries: [SafeTensors.Entry] = []
        var infos: [LayerInfo] = []
        for (i, layer) in model.layers.enumerated() {
            func weighted(_ w: [Int16], _ bits: BitWidth, _ shape: [Int], _ b: [Int64], _ r: Requantization) {
                entries.append(
                    entry("\(i).weight", w.map(Int64.init), shape: shape, narrow: bits.bits <= 8 ? .I8 : .I16)
                )
                entries.append(entry("\(i).bias", b, shape: [b.count], narrow: .I32))
                entries.append(
                    entry("\(i).multiplier", r.multiplier, shape: [r.multiplier.count], narrow: .I32))
                entries.append(entry("\(i).shift", r.shift, shape: [r.shift.count], narrow: .I32))
            }
            switch layer {
            case .dense(let d):
                weighted(d.weight, d.weightBits, [d.outFeatures, d.inFeatures], d.bias, d.requant)
                infos.append(
                    LayerInfo(
                        type: "dense", inFeatures: d.inFeatures, outFeatures: d.outFeatures,
                        outMin: d.requant.outMin, outMax: d.requant.outMax,
                        accumulatorBits: d.requant.accumulatorBits, weightBits: d.weightBits.bits))
            case .conv(let c):
                weighted(
                    c.weight, c.weightBits, [c.outChannels, c.inChannels, c.kernel, c.kernel], c.bias,
                    c.requant)
                infos.append(
                    LayerInfo(
                        type: "conv2d", inChannels: c.inChannels, outChannels: c.outChannels,
                        kernel: c.kernel,
                        stride: c.stride, padding: c.padding, outMin: c.requant.outMin,
                        outMax: c.requant.outMax,
                        accumulatorBits: c.requant.accumulatorBits, weightBits: c.weightBits.bits))
            case let .maxPool(k, s, p):
                infos.append(LayerInfo(type: "maxpool2d", kernel: k, stride: s, padding: p))
            case let .avgPool(k, s): infos.append(LayerInfo(type: "avgpool2d", kernel: k, stride: s))
            case .globalAvgPool: infos.append(LayerInfo(type: "globalavgpool2d"))
            case .flatten: infos.append(LayerInfo(type: "flatten"))
            case let .clamp(lo, hi): infos.append(LayerInfo(type: "clamp", lo: lo, hi: hi))
            }
        }
        // Sorted keys: the same model gives the same bytes (a dictionary's order differs per process).
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = String(
            decoding: try encoder.encode(Info(inputShape: model.inputShape, layers: infos)), as: UTF8.self)
        var metadata = scales
        metadata["qshape.integer_model"] = json
        try SafeTensors.write(SafeTensors.File(entries: entries, metadata: metadata), to: path)
    }

    public static func load(_ path: String) throws -> IntegerModel {
        let file = try SafeTensors.read(path)
        guard let text = file.metadata["qshape.integer_model"],
            let info = try? JSONDecoder().decode(Info.self, from: Data(text.utf8))
        else {
            throw DataError("\(path): not a QShape integer model (no qshape.integer_model metadata)")
        }
        func ints(_ name: String) throws -> [Int64] {
            guard let e = file[name] else { throw DataError("\(path): missing tensor \(name)") }
            guard [.I8, .I16, .I32, .I64].contains(e.dtype) else {
                throw DataError("\(path): \(name) must be an integer tensor, is \(e.dtype.rawValue)")
            }
            return e.integers
        }
        func requant(_ i: Int, _ l: LayerInfo) throws -> Requantization {
            Requantization(
                multiplier: try ints("\(i).multiplier"), shift: try ints("\(i).shift"),
                outMin: l.outMin ?? 0, outMax: l.outMax ?? 0, accumulatorBits: l.accumulatorBits ?? 32)
        }
        /// Layer i's weights and their recorded width, each weight within ±qmax of it.
        func weights(_ i: Int, _ l: LayerInfo) throws -> ([Int16], BitWidth) {
            guard let b = l.weightBits, let bits = BitWidth(b) else {
                throw DataError("\(path): layer \(i) does not record a weight width \(BitWidth.allowedText)")
            }
            let w = try ints("\(i).weight"), qmax = Int64(bits.qmax)
            if let bad = w.first(where: { abs($0) > qmax }) {
                throw DataError("\(path): \(i).weight holds \(bad), outside the \(bits) grid ±\(qmax)")
            }
            return (w.map { Int16($0) }, bits)
        }
        let layers: [IntegerLayer] = try info.layers.enumerated().map { i, l in
            switch l.type {
            case "dense":
                let (w, bits) = try weights(i, l)
                return .dense(
                    IntegerDense(
                        inFeatures: l.inFeatures ?? 0, outFeatures: l.outFeatures ?? 0,
                        weight: w, weightBits: bits, bias: try ints("\(i).bias"), requant: try requant(i, l)))
            case "conv2d":
                let (w, bits) = try weights(i, l)
                return .conv(
                    IntegerConv(
                        inChannels: l.inChannels ?? 0, outChannels: l.outChannels ?? 0, kernel: l.kernel ?? 1,
                        stride: l.stride ?? 1, padding: l.padding ?? 0,
                        weight: w, weightBits: bits, bias: try ints("\(i).bias"), requant: try requant(i, l)))
            case "maxpool2d":
                return .maxPool(kernel: l.kernel ?? 2, stride: l.stride ?? 2, padding: l.padding ?? 0)
            case "avgpool2d": return .avgPool(kernel: l.kernel ?? 2, stride: l.stride ?? 2)
            case "globalavgpool2d": return .globalAvgPool
            case "flatten": return .flatten
            case "clamp": return .clamp(lo: l.lo ?? 0, hi: l.hi ?? 0)
            default: throw DataError("\(path): layer \(i) has unknown type \(l.type)")
            }
        }
        return IntegerModel(inputShape: info.inputShape, layers: layers)
    }
}
