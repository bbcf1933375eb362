// The C integer kernels of an exported model, as text: one function per combination of layer kind,
// activation types, weight format and accumulator that the model uses, so only what it needs is
// compiled in. The arithmetic is the Swift engine's (IntegerRuntime), operation for operation.

/// A kernel the model calls: its external name and its C definition.
struct Kernel: Hashable {
    let name: String
    let definition: String
}

/// The static helpers the kernels call (emitted once each, and only when used).
enum Helper: Int, CaseIterable, Comparable {
    case asr64, requantize, requantizeShift, roundedDivide, weight4, weight2

    static func < (a: Helper, b: Helper) -> Bool { a.rawValue < b.rawValue }

    var definition: String {
        switch self {
        case .asr64:
            return """
            /* Arithmetic right shift of a signed 64-bit value (portable C99: no shift of a negative). */
            static int64_t qs_asr64(int64_t v, int32_t s)
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

    var helpers: [Helper] {
        var h: [Helper] = [.asr64, shiftOnly ? .requantizeShift : .requantize]
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

    /// The statement that writes one output from `acc` for channel `c`.
    func store(_ target: String) -> String {
        let call = shiftOnly
            ? "qs_requantize_shift((int64_t)bias[o] + acc, \(limit), L->shift[c], L->out_min, L->out_max)"
            : "qs_requantize((int64_t)bias[o] + acc, \(limit), (int64_t)mult[c], L->shift[c], L->out_min, L->out_max)"
        return "\(target) = (\(output.cName))\(call);"
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
        let dot: String
        if v.byteRows && (v.weights == .p4 || v.weights == .p2) {
            let per = 8 / v.weights.fieldBits, bits = v.weights.fieldBits
            let mask = (1 << bits) - 1, sign = 1 << (bits - 1)
            let terms = (0..<per).map { f in
                let field = f == 0 ? "(b & \(mask))" : "((b >> \(f * bits)) & \(mask))"
                return "            acc += (\(acc))(((\(field) ^ \(sign)) - \(sign)) * (int32_t)x[\(per) * k + \(f)]);"
            }.joined(separator: "\n")
            dot = """
                    const uint8_t *row = w + o * (n / \(per));
                    for (k = 0; k < n / \(per); k++) {
                        const int32_t b = row[k];
            \(terms)
                    }
            """
        } else if v.weights == .i8 || v.weights == .i16 {
            dot = """
                    const \(v.weights.cElement) *row = w + o * n;
                    for (k = 0; k < n; k++) acc += (\(acc))((int32_t)row[k] * (int32_t)x[k]);
            """
        } else {
            dot = """
                    const int32_t base = o * n;
                    for (k = 0; k < n; k++) acc += (\(acc))(\(v.weight("base + k")) * (int32_t)x[k]);
            """
        }
        let definition = """
        void \(name)(const \(v.input.cName) *x, \(v.output.cName) *y, const \(prefix)_layer *L)
        {
        \(v.prologue)
            const int32_t n = L->n_in;
            int32_t o, k;
            for (o = 0; o < L->n_out; o++) {
                const int32_t c = L->per_channel ? o : 0;
                \(acc) acc = 0;
        \(dot)
                \(v.store("y[o]"))
            }
        }
        """
        return Kernel(name: name, definition: definition)
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
            \(tin) *restrict cols = (\(tin) *)(sum + block);
            int32_t first, n, o, j, ic, ky, kx, kk;
            for (first = 0; first < positions; first += block) {
                n = positions - first < block ? positions - first : block;
                kk = 0;
                for (ic = 0; ic < C; ic++) {
                    for (ky = 0; ky < K; ky++) {
                        for (kx = 0; kx < K; kx++, kk++) {
                            \(tin) *dst = cols + kk * block;
                            int32_t oy = first / OW, ox = first % OW;
                            for (j = 0; j < n; j++) {
                                const int32_t iy = oy * S - P + ky, ix = ox * S - P + kx;
                                dst[j] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(ic * H + iy) * W + ix] : 0;
                                if (++ox == OW) { ox = 0; oy++; }
                            }
                        }
                    }
                }
                for (o = 0; o < L->n_out; o++) {
                    const int32_t c = L->per_channel ? o : 0, row = o * patch;
                    for (j = 0; j < n; j++) sum[j] = 0;
                    for (kk = 0; kk + 4 <= patch; kk += 4) {
                        const int32_t w0 = \(v.weight("row + kk")), w1 = \(v.weight("row + kk + 1"));
                        const int32_t w2 = \(v.weight("row + kk + 2")), w3 = \(v.weight("row + kk + 3"));
                        const \(tin) *restrict c0 = cols + kk * block, *restrict c1 = c0 + block;
                        const \(tin) *restrict c2 = c1 + block, *restrict c3 = c2 + block;
                        for (j = 0; j < n; j++) {
                            sum[j] += (\(acc))(w0 * (int32_t)c0[j] + w1 * (int32_t)c1[j])
                                    + (\(acc))(w2 * (int32_t)c2[j] + w3 * (int32_t)c3[j]);
                        }
                    }
                    for (; kk < patch; kk++) {
                        const int32_t w0 = \(v.weight("row + kk"));
                        const \(tin) *restrict c0 = cols + kk * block;
                        for (j = 0; j < n; j++) sum[j] += (\(acc))(w0 * (int32_t)c0[j]);
                    }
                    for (j = 0; j < n; j++) {
                        const \(acc) acc = sum[j];
                        \(v.store("y[o * positions + first + j]"))
                    }
                }
            }
        }
        """
        return Kernel(name: name, definition: definition)
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
