// The C integer kernels of an exported model, as text: one function per combination of layer kind,
// activation types, weight format and accumulator that the model uses, so only what it needs is
// compiled in. The arithmetic is the Swift engine's (IntegerRuntime), operation for operation.

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

    var definition: String {
        switch self {
        case .asr64:
            return """
            /* Arithmetic right shift of a signed 64-bit value, 0 <= s <= 62 (portable C99: no shift of a negative). */
            static inline int64_t qs_asr64(int64_t v, int32_t s)
            {
                return v >= 0 ? v >> s : ~((~v) >> s);
            }
            """
        case .requantize:
            return """
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
            """
        case .requantizeShift:
            return """
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
            """
        case .roundedDivide:
            return """
            /* sum / n rounded half away from zero (n > 0), as IntegerRuntime.roundedDivide. */
            static int32_t qs_rounded_divide(int32_t sum, int32_t n)
            {
                return sum >= 0 ? (sum + n / 2) / n : -((-sum + n / 2) / n);
            }
            """
        case .weight4:
            return """
            /* Weight i of a 4-bit packed array: two's-complement nibbles, low nibble first. */
            static int32_t qs_weight4(const uint8_t *w, int32_t i)
            {
                const int32_t field = (w[i >> 1] >> ((i & 1) << 2)) & 15;
                return (field ^ 8) - 8;
            }
            """
        case .weight2:
            return """
            /* Weight i of a 2-bit packed array: two's-complement fields, lowest bits first. */
            static int32_t qs_weight2(const uint8_t *w, int32_t i)
            {
                const int32_t field = (w[i >> 2] >> ((i & 3) << 1)) & 3;
                return (field ^ 2) - 2;
            }
            """
        }
    }
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
        let call = shiftOnly
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
        """ + (shiftOnly ? "" : "\n    const \(multiplierType) *mult = (const \(multiplierType) *)L->multiplier;")
    }
}

enum Kernels {
    /// y[o] = requantise(bias[o] + Σ_k W[o,k]·x[k]).
    static func dense(_ v: WeightedVariant, prefix: String) -> Kernel {
        let name = "\(prefix)_\(v.suffix("dense"))"
        let acc = v.accType
        let rows = 4
        let definition = """
        void \(name)(const \(v.input.cName) *x, \(v.output.cName) *y, const \(prefix)_layer *L)
        {
        \(v.prologue)
            const int32_t n = L->n_in;
            int32_t o = 0, k;
            /* four rows at a time: each input is loaded once for four accumulators */
            for (; o + \(rows) <= L->n_out; o += \(rows)) {
                \(acc) \((0..<rows).map { "a\($0) = 0" }.joined(separator: ", "));
        \(denseDot(v, rows: rows))
        \((0..<rows).map { "        " + v.store("y[o + \($0)]", acc: "a\($0)", index: "o + \($0)") }.joined(separator: "\n"))
            }
            for (; o < L->n_out; o++) {
                \(acc) a0 = 0;
        \(denseDot(v, rows: 1))
                \(v.store("y[o]", acc: "a0", index: "o"))
            }
        }
        """
        return Kernel(name: name, definition: definition)
    }

    /// The dot products of `rows` consecutive rows from row `o` with x, into a0, a1, …
    static func denseDot(_ v: WeightedVariant, rows: Int) -> String {
        let acc = v.accType, r = 0..<rows
        if v.byteRows && (v.weights == .p4 || v.weights == .p2) {
            let per = 8 / v.weights.fieldBits, bits = v.weights.fieldBits
            let mask = (1 << bits) - 1, sign = 1 << (bits - 1)
            func field(_ b: String, _ f: Int) -> String {
                "(((\(f == 0 ? "\(b) & \(mask)" : "(\(b) >> \(f * bits)) & \(mask)")) ^ \(sign)) - \(sign))"
            }
            let inputs = (0..<per).map { "x\($0) = x[\(per) * k + \($0)]" }.joined(separator: ", ")
            let sums = r.map { i in
                "            a\(i) += " + (0..<per).map { "(\(acc))(\(field("b\(i)", $0)) * x\($0))" }.joined(separator: " + ") + ";"
            }.joined(separator: "\n")
            return """
                    const uint8_t *r0 = w + o * (n / \(per));
                    for (k = 0; k < n / \(per); k++) {
                        const int32_t \(inputs);
                        const int32_t \(r.map { "b\($0) = r0[\($0) * (n / \(per)) + k]" }.joined(separator: ", "));
            \(sums)
                    }
            """
        }
        let weight: (Int) -> String = v.weights == .i8 || v.weights == .i16
            ? { "(int32_t)r0[\($0 == 0 ? "" : "\($0) * n + ")k]" }
            : { v.weight("(o + \($0)) * n + k") }
        let row = v.weights == .i8 || v.weights == .i16 ? "        const \(v.weights.cElement) *r0 = w + o * n;\n" : ""
        return row + """
                for (k = 0; k < n; k++) {
                    const int32_t xk = x[k];
        \(r.map { "            a\($0) += (\(acc))(\(weight($0)) * xk);" }.joined(separator: "\n"))
                }
        """
    }

    /// Convolution, (C, H, W) → (O, OH, OW), over blocks of `block` output positions (row-major
    /// (oy, ox)). For each block the inputs under every (ic, ky, kx) tap are gathered once into `cols`
    /// (zeros where a tap falls in the padding); each output channel then sweeps four taps at a time
    /// over the block's accumulators, so they are loaded and stored once per four MACs and the
    /// inner loop runs over `block` contiguous positions.
    static func conv(_ v: WeightedVariant, prefix: String) -> Kernel {
        let name = "\(prefix)_\(v.suffix("conv"))"
        let acc = v.accType, tin = v.input.cName
        let definition = """
        void \(name)(const \(tin) *x, \(v.output.cName) *y, const \(prefix)_layer *L, void *scratch, int32_t block)
        {
        \(v.prologue)
            const int32_t C = L->n_in, H = L->in_h, W = L->in_w, K = L->kernel, S = L->stride, P = L->padding;
            const int32_t OH = (H + 2 * P - K) / S + 1, OW = (W + 2 * P - K) / S + 1;
            const int32_t patch = C * K * K, positions = OH * OW;
            \(acc) *restrict sum = (\(acc) *)scratch;
            \(tin) *restrict cols = (\(tin) *)(sum + 4 * block);
            int32_t first, n, o, j, ic, ky, kx, kk;
            for (first = 0; first < positions; first += block) {
                n = positions - first < block ? positions - first : block;
                kk = 0;
                for (ic = 0; ic < C; ic++) {
                    for (ky = 0; ky < K; ky++) {
                        for (kx = 0; kx < K; kx++, kk++) {
                            /* row by row: output columns [lo, hi) read input columns inside the image */
                            const int32_t lo = P > kx ? (P - kx + S - 1) / S : 0;
                            const int32_t end = (W + P - kx + S - 1) / S, hi = end < OW ? end : OW;
                            \(tin) *d = cols + kk * block;
                            int32_t oy = first / OW, ox = first % OW, left = n;
                            while (left > 0) {
                                const int32_t iy = oy * S - P + ky, stop = ox + (OW - ox < left ? OW - ox : left);
                                const int32_t base = (ic * H + iy) * W - P + kx;
                                int32_t col = ox;
                                left -= stop - ox;
                                if (iy < 0 || iy >= H) {
                                    for (; col < stop; col++) *d++ = 0;
                                } else {
                                    const int32_t upto = stop < hi ? stop : hi;
                                    for (; col < stop && col < lo; col++) *d++ = 0;
                                    if (S == 1) {
                                        for (; col < upto; col++) *d++ = x[base + col];
                                    } else {
                                        for (; col < upto; col++) *d++ = x[base + col * S];
                                    }
                                    for (; col < stop; col++) *d++ = 0;
                                }
                                ox = 0;
                                oy++;
                            }
                        }
                    }
                }
                /* four output channels at a time (the last group repeats a channel it does not
                   store): each gathered input is loaded once for four accumulators */
                for (o = 0; o < L->n_out; o += 4) {
                    const int32_t count = L->n_out - o < 4 ? L->n_out - o : 4;
                    int32_t wt[16], i, t;
                    for (j = 0; j < 4 * n; j++) sum[j] = 0;
                    for (kk = 0; kk < patch; kk += 4) {
                        /* taps past the patch's end get weight 0 and read tap kk's inputs */
                        const int32_t taps = patch - kk < 4 ? patch - kk : 4;
                        const \(tin) *c0 = cols + kk * block;
                        for (i = 0; i < 4; i++) {
                            const int32_t at = (o + (i < count ? i : 0)) * patch + kk;
                            for (t = 0; t < 4; t++) wt[4 * i + t] = t < taps ? \(v.weight("at + t")) : 0;
                        }
                        \(taps4Name(v))(sum, sum + n, sum + 2 * n, sum + 3 * n, c0, taps > 1 ? c0 + block : c0,
                                     taps > 2 ? c0 + 2 * block : c0, taps > 3 ? c0 + 3 * block : c0, wt, n);
                    }
                    for (i = 0; i < count; i++) {
                        const \(acc) *s = sum + i * n;
                        \(v.requantizeBlock(sums: "s", channel: "o + i", output: "y + (o + i) * positions + first"))
                    }
                }
            }
        }
        """
        return Kernel(name: name, definition: definition, support: taps4(v, name: taps4Name(v)))
    }

    static func taps4Name(_ v: WeightedVariant) -> String { "qs_taps4_\(v.suffix("conv"))"
    }

    /// s_i[j] += Σ_t w[4i + t]·c_t[j] for four channels i and four taps t: a function of its own so
    /// that `restrict` on its parameters tells compilers the eight streams do not overlap.
    static func taps4(_ v: WeightedVariant, name: String) -> String {
        let acc = v.accType, tin = v.input.cName
        let weights = (0..<4).map { i in "    const int32_t " + (0..<4).map { t in "w\(i)_\(t) = w[\(4 * i + t)]" }.joined(separator: ", ") + ";" }
        let updates = (0..<4).map { i in
            "        s\(i)[j] += (\(acc))(w\(i)_0 * (int32_t)c0[j] + w\(i)_1 * (int32_t)c1[j]) + (\(acc))(w\(i)_2 * (int32_t)c2[j] + w\(i)_3 * (int32_t)c3[j]);"
        }
        return """
        static void \(name)(\((0..<4).map { "\(acc) *restrict s\($0)" }.joined(separator: ", ")),
                    \((0..<4).map { "const \(tin) *restrict c\($0)" }.joined(separator: ", ")),
                    const int32_t *restrict w, int32_t n)
        {
        \(weights.joined(separator: "\n"))
            int32_t j;
            for (j = 0; j < n; j++) {
        \(updates.joined(separator: "\n"))
            }
        }
        """
    }

    /// Max pooling; windows are clipped to the image (padding never wins).
    static func maxPool(_ t: ActivationType, prefix: String) -> Kernel {
        let name = "\(prefix)_maxpool_\(t.rawValue)"
        let definition = """
        void \(name)(const \(t.cName) *x, \(t.cName) *y, int32_t channels, int32_t h, int32_t w,
                     int32_t k, int32_t s, int32_t p)
        {
            const int32_t oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
            int32_t c, oy, ox, ky, kx;
            if (p == 0 && k == 2 && s == 2) {   /* the common window */
                for (c = 0; c < channels; c++) {
                    for (oy = 0; oy < oh; oy++) {
                        const \(t.cName) *r0 = x + (c * h + 2 * oy) * w, *r1 = r0 + w;
                        \(t.cName) *out = y + (c * oh + oy) * ow;
                        for (ox = 0; ox < ow; ox++) {
                            const int32_t a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
                            const int32_t b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
                            out[ox] = (\(t.cName))(a > b ? a : b);
                        }
                    }
                }
                return;
            }
            if (p == 0) {   /* every window inside the image: no bounds tests */
                for (c = 0; c < channels; c++) {
                    for (oy = 0; oy < oh; oy++) {
                        for (ox = 0; ox < ow; ox++) {
                            const \(t.cName) *r = x + (c * h + oy * s) * w + ox * s;
                            int32_t best = r[0];
                            for (ky = 0; ky < k; ky++) {
                                for (kx = 0; kx < k; kx++) if (r[ky * w + kx] > best) best = r[ky * w + kx];
                            }
                            y[(c * oh + oy) * ow + ox] = (\(t.cName))best;
                        }
                    }
                }
                return;
            }
            for (c = 0; c < channels; c++) {
                for (oy = 0; oy < oh; oy++) {
                    for (ox = 0; ox < ow; ox++) {
                        int32_t best = -32768;
                        for (ky = 0; ky < k; ky++) {
                            const int32_t iy = oy * s - p + ky;
                            if (iy < 0 || iy >= h) continue;
                            for (kx = 0; kx < k; kx++) {
                                const int32_t ix = ox * s - p + kx;
                                if (ix < 0 || ix >= w) continue;
                                if (x[(c * h + iy) * w + ix] > best) best = x[(c * h + iy) * w + ix];
                            }
                        }
                        y[(c * oh + oy) * ow + ox] = (\(t.cName))best;
                    }
                }
            }
        }
        """
        return Kernel(name: name, definition: definition)
    }

    /// Average pooling without padding, each window's sum divided with rounding.
    static func avgPool(_ t: ActivationType, prefix: String) -> Kernel {
        let name = "\(prefix)_avgpool_\(t.rawValue)"
        let definition = """
        void \(name)(const \(t.cName) *x, \(t.cName) *y, int32_t channels, int32_t h, int32_t w, int32_t k, int32_t s)
        {
            const int32_t oh = (h - k) / s + 1, ow = (w - k) / s + 1;
            int32_t c, oy, ox, ky, kx;
            for (c = 0; c < channels; c++) {
                for (oy = 0; oy < oh; oy++) {
                    for (ox = 0; ox < ow; ox++) {
                        int32_t sum = 0;
                        for (ky = 0; ky < k; ky++) {
                            for (kx = 0; kx < k; kx++) sum += x[(c * h + oy * s + ky) * w + ox * s + kx];
                        }
                        y[(c * oh + oy) * ow + ox] = (\(t.cName))qs_rounded_divide(sum, k * k);
                    }
                }
            }
        }
        """
        return Kernel(name: name, definition: definition)
    }

    /// Global average pooling: one rounded mean per channel.
    static func globalAvgPool(_ t: ActivationType, prefix: String) -> Kernel {
        let name = "\(prefix)_global_avgpool_\(t.rawValue)"
        let definition = """
        void \(name)(const \(t.cName) *x, \(t.cName) *y, int32_t channels, int32_t size)
        {
            int32_t c, i;
            for (c = 0; c < channels; c++) {
                int32_t sum = 0;
                for (i = 0; i < size; i++) sum += x[c * size + i];
                y[c] = (\(t.cName))qs_rounded_divide(sum, size);
            }
        }
        """
        return Kernel(name: name, definition: definition)
    }

    /// A standalone ReLU / ReLU6: clamp to [lo, hi].
    static func clamp(_ input: ActivationType, _ output: ActivationType, prefix: String) -> Kernel {
        let name = "\(prefix)_clamp_\(input.rawValue)_\(output.rawValue)"
        let definition = """
        void \(name)(const \(input.cName) *x, \(output.cName) *y, int32_t n, int32_t lo, int32_t hi)
        {
            int32_t i;
            for (i = 0; i < n; i++) {
                const int32_t v = x[i];
                y[i] = (\(output.cName))(v < lo ? lo : v > hi ? hi : v);
            }
        }
        """
        return Kernel(name: name, definition: definition)
    }

    /// The declaration of a kernel (its definition's first line, made a prototype).
    static func prototype(_ k: Kernel) -> String {
        let head = k.definition.prefix { $0 != "{" }
        return head.split(separator: "\n").map { $0.trimmingWhitespace() }.joined(separator: " ") + ";"
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}
