// The C integer kernels of an exported model, as text: one function per combination of layer kind,
// activation types, weight format and accumulator that the model uses, so only what it needs is
// compiled in. The arithmetic is the Swift engine's (IntegerRuntime), operation for operation.

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
                "            a\(i) += "
                    + (0..<per).map { "(\(acc))(\(field("b\(i)", $0)) * x\($0))" }.joined(separator: " + ")
                    + ";"
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
        let weight: (Int) -> String =
            v.weights == .i8 || v.weights == .i16
            ? { "(int32_t)r0[\($0 == 0 ? "" : "\($0) * n + ")k]" }
            : { v.weight("(o + \($0)) * n + k") }
        let row =
            v.weights == .i8 || v.weights == .i16
            ? "        const \(v.weights.cElement) *r0 = w + o * n;\n" : ""
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
            \(gatherText(tin))
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

    /// The conv kernel's gather: the inputs under every (ic, ky, kx) tap for the block's `n`
    /// positions, into `cols` row by row (zeros where a tap falls in the padding).
    static func gatherText(_ tin: String) -> String {
        """
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
        """
    }

    static func taps4Name(_ v: WeightedVariant) -> String {
        "qs_taps4_\(v.suffix("conv"))"
    }

    /// s_i[j] += Σ_t w[4i + t]·c_t[j] for four channels i and four taps t: a function of its own so
    /// that `restrict` on its parameters tells compilers the eight streams do not overlap.
    static func taps4(_ v: WeightedVariant, name: String) -> String {
        let acc = v.accType, tin = v.input.cName
        let weights = (0..<4).map { i in
            "    const int32_t " + (0..<4).map { t in "w\(i)_\(t) = w[\(4 * i + t)]" }.joined(separator: ", ")
                + ";"
        }
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
