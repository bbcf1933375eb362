// The pieces the C kernels are made of: a kernel's name and text, the static helpers they call
// (requantisation, rounding division, unpacking packed weights), and the choices that specialise
// a dense or conv kernel (activation types, weight storage, accumulator and multiplier widths).

/// A kernel the model calls: its external name and its C definition.
struct Kernel: Hashable {
    let name: String
    let definition: String
    /// Static functions only this kernel calls, emitted before it.
    var support = ""
}

/// The static helpers the kernels call (emitted once each, and only when used).
enum Helper: Int, CaseIterable, Comparable {
    case asr64, requantize, requantizeShift, roundedDivide, weight4, weight2

    static func < (a: Helper, b: Helper) -> Bool { a.rawValue < b.rawValue }

    var definition: String { Helper.definitions[self]! }

    /// The C text of each helper.
    static let definitions: [Helper: String] = [
        .asr64: """
        /* Arithmetic right shift of a signed 64-bit value, 0 <= s <= 62 (portable C99: no shift of a negative). */
        static inline int64_t qs_asr64(int64_t v, int32_t s)
        {
            return v >= 0 ? v >> s : ~((~v) >> s);
        }
        """,
        .requantize: """
        /* out = clamp((acc * mult + 2^(shift-1)) >> shift, lo, hi), acc first clamped to +-limit:
           one 64-bit product, one rounding (half up), as IntegerRuntime.requantize. */
        static int32_t qs_requantize(int64_t acc, int64_t limit, int64_t mult, int32_t shift, int32_t lo, int32_t hi)
        {
            int64_t p;
            if (acc > limit) acc = limit;
            if (acc < -limit) acc = -limit;
            p = acc * mult;
            if (shift > 0) p = qs_asr64(p + ((int64_t)1 << (shift - 1)), shift);
            if (p < lo) return lo;
            if (p > hi) return hi;
            return (int32_t)p;
        }
        """,
        .requantizeShift: """
        /* qs_requantize with multiplier 1 (power-of-two scales): a rounding shift, no product. */
        static int32_t qs_requantize_shift(int64_t acc, int64_t limit, int32_t shift, int32_t lo, int32_t hi)
        {
            if (acc > limit) acc = limit;
            if (acc < -limit) acc = -limit;
            if (shift > 0) acc = qs_asr64(acc + ((int64_t)1 << (shift - 1)), shift);
            if (acc < lo) return lo;
            if (acc > hi) return hi;
            return (int32_t)acc;
        }
        """,
        .roundedDivide: """
        /* sum / n rounded half away from zero (n > 0), as IntegerRuntime.roundedDivide. */
        static int32_t qs_rounded_divide(int32_t sum, int32_t n)
        {
            return sum >= 0 ? (sum + n / 2) / n : -((-sum + n / 2) / n);
        }
        """,
        .weight4: """
        /* Weight i of a 4-bit packed array: two's-complement nibbles, low nibble first. */
        static int32_t qs_weight4(const uint8_t *w, int32_t i)
        {
            const int32_t field = (w[i >> 1] >> ((i & 1) << 2)) & 15;
            return (field ^ 8) - 8;
        }
        """,
        .weight2: """
        /* Weight i of a 2-bit packed array: two's-complement fields, lowest bits first. */
        static int32_t qs_weight2(const uint8_t *w, int32_t i)
        {
            const int32_t field = (w[i >> 2] >> ((i & 3) << 1)) & 3;
            return (field ^ 2) - 2;
        }
        """
    ]
}

/// What decides the code of a dense or conv kernel.
struct WeightedVariant: Hashable {
    var input: ActivationType
    var output: ActivationType
    var weights: WeightFormat
    /// A 64-bit accumulator (else 32-bit).
    var wide: Bool
    /// Multipliers stored as int64_t (some value does not fit int32_t).
    var wideMultiplier: Bool
    /// Every multiplier is 1 (power-of-two scales): requantise by a shift alone.
    var shiftOnly: Bool
    /// Dense rows start on byte boundaries, so packed weights are read a byte at a time.
    var byteRows: Bool

    var accType: String { wide ? "int64_t" : "int32_t" }
    var biasType: String { wide ? "int64_t" : "int32_t" }
    var multiplierType: String { wideMultiplier ? "int64_t" : "int32_t" }
    var limit: String { wide ? "INT64_C(4611686018427387903)" : "INT32_C(2147483647)" }

    func suffix(_ kind: String) -> String {
        var s = "\(kind)_\(input.rawValue)_w\(weights.fieldBits)_\(output.rawValue)_a\(wide ? 64 : 32)"
        if shiftOnly { s += "_shift" } else if wideMultiplier { s += "_m64" }
        return s
    }

    /// The helpers a dense (one qs_requantize call per output) or conv kernel (its block loop) calls.
    func helpers(dense: Bool) -> [Helper] {
        var h: [Helper] = [.asr64]
        if dense { h.append(shiftOnly ? .requantizeShift : .requantize) }
        if weights == .p4 && !byteRows { h.append(.weight4) }
        if weights == .p2 && !byteRows { h.append(.weight2) }
        return h
    }

    /// The C expression of weight `index` (an int32_t), from `w`.
    func weight(_ index: String) -> String {
        switch weights {
        case .i8, .i16: "(int32_t)w[\(index)]"
        case .p4: "qs_weight4(w, \(index))"
        case .p2: "qs_weight2(w, \(index))"
        }
    }

    /// The statement that writes output `index` from the accumulator `acc`.
    func store(_ target: String, acc: String, index: String) -> String {
        let c = "L->per_channel ? \(index) : 0"
        let call =
            shiftOnly
            ? "qs_requantize_shift((int64_t)bias[\(index)] + \(acc), \(limit), L->shift[\(c)], L->out_min, L->out_max)"
            : "qs_requantize((int64_t)bias[\(index)] + \(acc), \(limit), (int64_t)mult[\(c)], L->shift[\(c)], L->out_min, L->out_max)"
        return "\(target) = (\(output.cName))\(call);"
    }

    /// Requantises the block's `n` sums of channel `o` into `target` with the channel's parameters
    /// read once: the arithmetic of qs_requantize written out, so that compilers vectorise it.
    func requantizeBlock(sums: String, channel o: String, output target: String) -> String {
        let c = "L->per_channel ? \(o) : 0"
        let product = shiftOnly ? "a" : "a * m"
        let multiplier = shiftOnly ? "" : "const int64_t m = mult[\(c)];\n                "
        return """
            {
                            \(multiplier)const int64_t b = bias[\(o)], limit = \(limit);
                            const int32_t sh = L->shift[\(c)], lo = L->out_min, hi = L->out_max;
                            const int64_t half = sh > 0 ? (int64_t)1 << (sh - 1) : 0;
                            \(output.cName) *out = \(target);
                            for (j = 0; j < n; j++) {
                                int64_t a = b + \(sums)[j];
                                a = a > limit ? limit : a < -limit ? -limit : a;
                                a = qs_asr64(\(product) + half, sh);
                                out[j] = (\(output.cName))(a < lo ? lo : a > hi ? hi : a);
                            }
                        }
            """
    }

    var prologue: String {
        """
            const \(weights.cElement) *w = (const \(weights.cElement) *)L->weight;
            const \(biasType) *bias = (const \(biasType) *)L->bias;
        """
            + (shiftOnly
                ? "" : "\n    const \(multiplierType) *mult = (const \(multiplierType) *)L->multiplier;")
    }
}
