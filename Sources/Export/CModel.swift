// Turns an IntegerModel into C99 source: model.h (the API and the flash/RAM figures), model.c
// (weights and parameters as static const arrays, static activation buffers, the layer sequence)
// and qshape_nn.h/.c (the kernels it uses). Integer arithmetic only; no malloc, no libc.
import IntegerRuntime

/// Sizes of an exported model, known when the C is written.
public struct CModelSummary: Codable, Equatable, Sendable {
    public var inputShape: [Int]
    public var classes: Int
    /// Flash of the weight arrays alone (packed where 4 bits or fewer).
    public var weightBytes: Int
    /// Flash of every constant: weights, biases, multipliers, shifts, layer descriptors excluded.
    public var parameterBytes: Int
    /// RAM of the two static activation buffers and the conv kernels' accumulator row.
    public var activationBytes: Int
    /// Multiply-accumulates of one inference.
    public var macs: Int
    /// The weight storage of each weighted layer: "p2", "p4", "i8" or "i16".
    public var weightFormats: [String]
    enum CodingKeys: String, CodingKey {
        case classes, macs
        case inputShape = "input_shape", weightBytes = "weight_bytes", parameterBytes = "parameter_bytes"
        case activationBytes = "activation_bytes", weightFormats = "weight_formats"
    }
}

/// A generated C library: file name → contents, and its sizes.
public struct CModel: Sendable {
    public var files: [(name: String, contents: String)]
    public var summary: CModelSummary
    public var prefix: String
}

public enum CGenerator {
    /// Generates the C for `model`, each weighted layer stored at the width it records
    /// (`weightBits`). `prefix` names every external symbol.
    /// `convBlock` output positions per conv sweep: 64 lets a compiler's vector units work on the
    /// host (the scratch is then patch × 64 inputs); a small part can take fewer, down to 1.
    public static func generate(
        _ model: IntegerModel, prefix: String = "qshape_model",
        convBlock: Int = 64
    ) throws -> CModel {
        try checkIdentifier(prefix)
        var plan = try Plan(model: model, prefix: prefix, convBlock: convBlock)
        plan.build()
        let header = plan.modelHeader()
        return CModel(
            files: [
                ("model.h", header), ("model.c", plan.modelSource()),
                ("qshape_nn.h", plan.kernelHeader()), ("qshape_nn.c", plan.kernelSource())
            ],
            summary: plan.summary, prefix: prefix)
    }

    /// Refuses a prefix that is not a C identifier (it starts every exported symbol).
    public static func checkIdentifier(_ s: String) throws {
        let ok =
            !s.isEmpty && s.utf8.count <= 40
            && s.utf8.enumerated().allSatisfy { i, c in
                (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95 || (i > 0 && c >= 48 && c <= 57)
            }
        guard ok else {
            throw ExportError(
                "--prefix '\(s)' is not a C identifier: use letters, digits and '_' (not first a digit), at most 40"
            )
        }
    }
}

/// The layer-by-layer plan: activation types, buffers, kernels and arrays.
struct Plan {
    let model: IntegerModel
    let prefix: String
    var kernels: [String: Kernel] = [:]
    var helpers: Set<Helper> = []
    /// C definitions of the constant arrays and layer descriptors, in order.
    var constants: [String] = []
    /// The statements of the predict function.
    var calls: [String] = []
    var bufferBytes = [0, 0]
    /// Output positions a conv kernel computes per sweep (its scratch grows with it).
    let convBlock: Int
    /// The conv kernels' scratch: a block's accumulators and the inputs gathered under it.
    var scratchBytes = 0
    var summary: CModelSummary
    var outputExpression = "input"
    var outputType = ActivationType.u8

    init(model: IntegerModel, prefix: String, convBlock: Int) throws {
        self.model = model; self.prefix = prefix; self.convBlock = max(1, convBlock)
        guard !model.layers.isEmpty else { throw ExportError("the model has no layers") }
        summary = CModelSummary(
            inputShape: model.inputShape, classes: 0, weightBytes: 0, parameterBytes: 0,
            activationBytes: 0, macs: 0, weightFormats: [])
        try validate()
    }

    static func typeName(_ layer: IntegerLayer) -> String {
        switch layer {
        case .dense: "dense"
        case .conv: "conv2d"
        case .maxPool: "maxpool2d"
        case .avgPool: "avgpool2d"
        case .globalAvgPool: "global_avgpool2d"
        case .flatten: "flatten"
        case .clamp: "relu"
        }
    }

    // MARK: - Building

    /// The call of a pooling layer's kernel (which it marks as used).
    mutating func poolCall(
        _ layer: IntegerLayer, _ type: ActivationType, source: String, target: String, shape: [Int]
    ) -> String {
        let kernel: Kernel, arguments: String
        switch layer {
        case let .maxPool(k, s, p):
            (kernel, arguments) = (
                Kernels.maxPool(type, prefix: prefix), "\(shape[1]), \(shape[2]), \(k), \(s), \(p)"
            )
            use(kernel, [])
        case let .avgPool(k, s):
            (kernel, arguments) = (
                Kernels.avgPool(type, prefix: prefix), "\(shape[1]), \(shape[2]), \(k), \(s)"
            )
            use(kernel, [.roundedDivide])
        default:
            (kernel, arguments) = (Kernels.globalAvgPool(type, prefix: prefix), "\(shape[1] * shape[2])")
            use(kernel, [.roundedDivide])
        }
        return "\(kernel.name)(\(source), \(target), \(shape[0]), \(arguments));"
    }

    /// The call of conv layer `i`'s kernel (generated and marked as used), and its output type;
    /// counts its MACs and the scratch it needs.
    mutating func convCall(
        _ i: Int, _ c: IntegerConv, _ type: ActivationType, source: String, buffer: Int, in shape: [Int],
        out: [Int]
    ) -> (String, ActivationType) {
        let (v, k) = weightedKernel(
            i, weight: c.weight, bias: c.bias, requant: c.requant, rows: c.outChannels,
            geometry:
                "\(c.inChannels), \(c.outChannels), \(shape[1]), \(shape[2]), \(c.kernel), \(c.stride), \(c.padding)",
            bits: c.weightBits.bits, input: type, dense: false)
        let block = min(convBlock, out[1] * out[2])
        // Four channels' accumulators for a block, then the inputs gathered under it (patch × block).
        scratchBytes = max(
            scratchBytes,
            4 * block * (v.wide ? 8 : 4) + c.inChannels * c.kernel * c.kernel * block * type.bytes)
        summary.macs += out.reduce(1, *) * c.inChannels * c.kernel * c.kernel
        return (
            "\(k.name)(\(source), \(target(buffer, v.output)), &qs_layer_\(i), qs_scratch, \(block));",
            v.output
        )
    }

    mutating func build() {
        var shape = model.inputShape
        var source = "input", type = ActivationType.u8
        var range: (lo: Int64, hi: Int64) = (0, 255)
        var buffer = 0
        for (i, layer) in model.layers.enumerated() {
            let out = IntegerEngine.outputShape(layer, shape)
            let count = out.reduce(1, *)
            if case .flatten = layer { shape = out; continue }
            var outType = type
            var call: String
            switch layer {
            case .dense(let d):
                let (v, k) = weightedKernel(
                    i, weight: d.weight, bias: d.bias, requant: d.requant, rows: d.outFeatures,
                    geometry: "\(d.inFeatures), \(d.outFeatures), 0, 0, 0, 0, 0",
                    bits: d.weightBits.bits, input: type, dense: true)
                call = "\(k.name)(\(source), \(target(buffer, v.output)), &qs_layer_\(i));"
                summary.macs += d.inFeatures * d.outFeatures
                (outType, range) = (v.output, (d.requant.outMin, d.requant.outMax))
            case .conv(let c):
                (call, outType) = convCall(i, c, type, source: source, buffer: buffer, in: shape, out: out)
                range = (c.requant.outMin, c.requant.outMax)
            case .maxPool, .avgPool, .globalAvgPool:
                call = poolCall(layer, type, source: source, target: target(buffer, type), shape: shape)
            case let .clamp(lo, hi):
                range = Plan.clamped(range, lo, hi)
                outType = ActivationType.fitting(range.lo, range.hi)
                let kernel = Kernels.clamp(type, outType, prefix: prefix)
                use(kernel, [])
                call = "\(kernel.name)(\(source), \(target(buffer, outType)), \(count), \(lo), \(hi));"
            case .flatten:
                continue
            }
            calls.append(
                "/* layer \(i): \(Plan.typeName(layer)) → \(out.map(String.init).joined(separator: "×")) \(outType.cName) */"
            )
            calls.append(call)
            bufferBytes[buffer] = max(bufferBytes[buffer], count * outType.bytes)
            source = "(const \(outType.cName) *)qs_buffer\(buffer)"
            type = outType
            buffer = 1 - buffer
            shape = out
        }
        outputExpression = source
        outputType = type
        summary.classes = shape.reduce(1, *)
        summary.activationBytes =
            bufferBytes.map(Plan.paddedBufferBytes).reduce(0, +) + (scratchBytes + 7) / 8 * 8
    }

    /// Each buffer is an int16_t array (aligned for every activation type).
    static func paddedBufferBytes(_ n: Int) -> Int { n == 0 ? 0 : (n + 1) / 2 * 2 }

    func target(_ buffer: Int, _ type: ActivationType) -> String { "(\(type.cName) *)qs_buffer\(buffer)" }

    mutating func use(_ k: Kernel, _ h: [Helper]) {
        kernels[k.name] = k
        for x in h { helpers.insert(x) }
        if h.contains(.requantize) || h.contains(.requantizeShift) { helpers.insert(.asr64) }
    }

    /// Emits a dense/conv layer's arrays and descriptor, and records the kernel it needs.
    mutating func weightedKernel(
        _ i: Int, weight: [Int16], bias: [Int64], requant r: Requantization, rows: Int,
        geometry: String, bits: Int, input: ActivationType, dense: Bool
    ) -> (WeightedVariant, Kernel) {
        let v = weightedLayer(
            i, weight: weight, bias: bias, requant: r, rows: rows, geometry: geometry, bits: bits,
            input: input, output: ActivationType.fitting(r.outMin, r.outMax), dense: dense)
        let k = dense ? Kernels.dense(v, prefix: prefix) : Kernels.conv(v, prefix: prefix)
        use(k, v.helpers(dense: dense))
        return (v, k)
    }

    mutating func weightedLayer(
        _ i: Int, weight: [Int16], bias: [Int64], requant r: Requantization, rows: Int,
        geometry: String, bits: Int, input: ActivationType, output: ActivationType,
        dense: Bool
    ) -> WeightedVariant {
        let format = WeightFormat.forBits(bits)
        let perChannel = Set(zip(r.multiplier, r.shift).map { "\($0),\($1)" }).count > 1
        let mult = perChannel ? r.multiplier : [r.multiplier[0]]
        let shift = perChannel ? r.shift : [r.shift[0]]
        let wide = r.accumulatorBits > 32
        let size = weight.count / rows
        let v = WeightedVariant(
            input: input, output: output, weights: format, wide: wide,
            wideMultiplier: mult.contains { $0 > Int64(Int32.max) }, shiftOnly: mult.allSatisfy { $0 == 1 },
            byteRows: dense && (size * format.fieldBits) % 8 == 0)
        let packed = format.pack(weight)
        summary.weightFormats.append(format.rawValue)
        summary.weightBytes += packed.count * (format == .i16 ? 2 : 1)
        constants.append(
            Plan.array(
                "qs_weight_\(i)", format.cElement, packed,
                comment:
                    "layer \(i): \(weight.count) weights, \(bits)-bit in \(format.rawValue) storage, (\(rows), \(size))"
            ))
        constants.append(Plan.array("qs_bias_\(i)", v.biasType, bias, comment: nil))
        var parameters = packed.count * (format == .i16 ? 2 : 1) + bias.count * (wide ? 8 : 4) + shift.count
        var multiplierName = "0"
        if !v.shiftOnly {
            constants.append(Plan.array("qs_multiplier_\(i)", v.multiplierType, mult, comment: nil))
            multiplierName = "qs_multiplier_\(i)"
            parameters += mult.count * (v.wideMultiplier ? 8 : 4)
        }
        constants.append(Plan.array("qs_shift_\(i)", "uint8_t", shift, comment: nil))
        summary.parameterBytes += parameters
        constants.append(
            """
            static const \(prefix)_layer qs_layer_\(i) = {
                qs_weight_\(i), qs_bias_\(i), \(multiplierName), qs_shift_\(i), \(perChannel ? 1 : 0), \(r.outMin), \(r.outMax),
                \(geometry)
            };
            """)
        return v
    }

    /// A static const array, twenty values a line.
    static func array(_ name: String, _ type: String, _ values: [Int64], comment: String?) -> String {
        var lines: [String] = []
        if let comment { lines.append("/* \(comment) */") }
        lines.append("static const \(type) \(name)[\(values.count)] = {")
        var i = 0
        while i < values.count {
            let end = min(values.count, i + 20)
            lines.append(
                "    " + values[i..<end].map { Plan.literal($0, type) }.joined(separator: ", ") + ",")
            i = end
        }
        lines.append("};")
        return lines.joined(separator: "\n")
    }

    static func literal(_ v: Int64, _ type: String) -> String {
        if type == "int64_t" { return v == Int64.min ? "INT64_MIN" : "INT64_C(\(v))" }
        if type == "int32_t" && v == Int64(Int32.min) { return "INT32_MIN" }
        return "\(v)"
    }
}
