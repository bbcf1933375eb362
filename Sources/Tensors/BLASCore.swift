// Which OpenBLAS kernels this processor can run, which the library chose, and the choice to make.
import CBLAS
import CProcessor

/// The vector features of this processor that decide which OpenBLAS kernels can run on it.
public struct ProcessorFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let avx = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX))
    public static let avx2 = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX2))
    public static let fma = ProcessorFeatures(rawValue: UInt32(QS_CPU_FMA))
    public static let avx512f = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512F))
    public static let avx512bw = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512BW))
    public static let avx512vl = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512VL))
    public static let avx512dq = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512DQ))
    public static let avx512cd = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512CD))
    public static let avx512bf16 = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512BF16))
    public static let amx = ProcessorFeatures(rawValue: UInt32(QS_CPU_AMX))
    public static let avx512vnni = ProcessorFeatures(rawValue: UInt32(QS_CPU_AVX512VNNI))
    /// The operating system saves the AVX (YMM) and AVX-512 (ZMM, opmask) registers.
    public static let osYMM = ProcessorFeatures(rawValue: UInt32(QS_CPU_OS_YMM))
    public static let osZMM = ProcessorFeatures(rawValue: UInt32(QS_CPU_OS_ZMM))

    /// AVX-512 as OpenBLAS's SkylakeX kernels use it.
    public static let avx512: ProcessorFeatures = [
        .avx512f, .avx512bw, .avx512vl, .avx512dq, .avx512cd, .osZMM
    ]

    /// The widest vector level usable here: 3 AVX-512, 2 AVX2 with FMA, 1 AVX, 0 SSE only.
    public var level: Int {
        let ymm = contains(.osYMM)
        if ymm && contains(.avx2) && contains(.fma) && contains(ProcessorFeatures.avx512) { return 3 }
        if ymm && contains(.avx2) && contains(.fma) { return 2 }
        if ymm && contains(.avx) { return 1 }
        return 0
    }

    /// The feature names, for records ("AVX2", "FMA", "AVX-512F", …).
    public var names: [String] {
        let all: [(ProcessorFeatures, String)] = [
            (.avx, "AVX"), (.avx2, "AVX2"), (.fma, "FMA"), (.avx512f, "AVX-512F"),
            (.avx512bw, "AVX-512BW"), (.avx512vl, "AVX-512VL"), (.avx512dq, "AVX-512DQ"),
            (.avx512cd, "AVX-512CD"), (.avx512bf16, "AVX-512-BF16"), (.avx512vnni, "AVX-512-VNNI"),
            (.amx, "AMX")
        ]
        return all.filter { contains($0.0) }.map(\.1)
    }

    public static func levelName(_ level: Int) -> String {
        ["SSE", "AVX", "AVX2", "AVX-512"][max(0, min(3, level))]
    }
}

/// This machine's processor, as CPUID reports it.
public struct Processor: Sendable {
    public var vendor: String, brand: String
    public var family: Int, model: Int
    public var features: ProcessorFeatures

    public static let current: Processor = {
        var vendor = [CChar](repeating: 0, count: 13), brand = [CChar](repeating: 0, count: 49)
        var family: Int32 = 0, model: Int32 = 0
        qs_cpu_vendor(&vendor)
        qs_cpu_brand(&brand)
        qs_cpu_family_model(&family, &model)
        func text(_ c: [CChar]) -> String {
            String(decoding: c.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                .split(separator: " ").joined(separator: " ")
        }
        return Processor(
            vendor: text(vendor), brand: text(brand), family: Int(family), model: Int(model),
            features: ProcessorFeatures(rawValue: qs_cpu_features()))
    }()
}

/// The OpenBLAS this process runs on.
public enum BLASLibrary {
    /// The kernel set in use ("Haswell", "SkylakeX", "Prescott", …).
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }
    /// Its build line, e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64".
    public static var config: String { openblas_get_config().map { String(cString: $0) } ?? "unknown" }
    public static var version: String {
        let words = config.split(separator: " ")
        return words.count > 1 && words[0] == "OpenBLAS" ? String(words[1]) : "unknown"
    }
}

/// Whether to run OpenBLAS on other kernels than the ones it chose. OpenBLAS picks its kernels
/// once, when it loads, from the processors it knows; on a newer one (an AVX-512 Xeon that 0.3.21
/// does not know) it falls back to SSE3 kernels at a quarter of the speed. The kernel set can only
/// be changed through `OPENBLAS_CORETYPE` before the library loads, so the executable decides here
/// at start-up and re-executes itself with the variable set (`BLASSetup` in Workflows).
public enum BLASCoreChoice {
    public enum Decision: Equatable, Sendable {
        case keep(reason: String)
        case select(core: String, reason: String)
    }

    /// The vector level each x86-64 OpenBLAS kernel set needs (nil for names not ranked here).
    public static func level(ofCore name: String) -> Int? {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": 3
        case "haswell", "zen": 2
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator": 1
        case "prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "barcelona", "opteron",
            "opteron(sse3)",
            "bobcat", "katmai", "coppermine", "northwood", "banias", "athlon", "nano", "generic":
            0
        default: nil
        }
    }

    /// The environment variables with which a user (or an administrator) pins OpenBLAS's kernels:
    /// when either is set, QShape never changes anything.
    public static let pinningVariables = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"]

    /// The choice, from the processor's features, OpenBLAS's own choice and the environment.
    public static func decide(
        features: ProcessorFeatures, vendor: String, libraryCore: String,
        environment: [String: String]
    ) -> Decision {
        if let set = pinningVariables.first(where: { environment[$0] != nil }) {
            return .keep(reason: "\(set) is set in the environment")
        }
        if environment["QSHAPE_BLAS_SELECT"] == "off" { return .keep(reason: "QSHAPE_BLAS_SELECT=off") }
        guard let have = level(ofCore: libraryCore) else {
            return .keep(reason: "OpenBLAS chose \(libraryCore), a kernel set QShape does not rank")
        }
        // Only a fallback below AVX2 is corrected: AVX2 kernels on an AVX-512 processor are
        // OpenBLAS's own considered choice (on Zen 4 its Haswell kernels match SkylakeX's).
        let best = features.level
        guard have < min(best, 2) else {
            return .keep(
                reason:
                    "OpenBLAS chose \(libraryCore) (\(ProcessorFeatures.levelName(have)) kernels) for a processor with \(ProcessorFeatures.levelName(best))"
            )
        }
        let core =
            best == 3
            ? "SkylakeX" : best == 2 ? (vendor == "AuthenticAMD" ? "Zen" : "Haswell") : "Sandybridge"
        return .select(
            core: core,
            reason:
                "OpenBLAS chose \(libraryCore) (\(ProcessorFeatures.levelName(have)) kernels) for a processor with \(ProcessorFeatures.levelName(best))"
        )
    }

    /// SGEMM on small, awkward shapes (both transposes, odd sizes, beta ≠ 0) against its naive
    /// twin: a kernel set that computes wrongly here is not used.
    public static func selfCheck() -> Bool {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        for (m, n, k, ta, tb) in [
            (37, 29, 41, false, false), (64, 96, 130, true, false), (5, 200, 17, false, true),
            (129, 33, 65, true, true)
        ] {
            let a = (0..<(m * k)).map { _ in next() }, b = (0..<(k * n)).map { _ in next() },
                c0 = (0..<(m * n)).map { _ in next() }
            var fast = c0, slow = c0
            let lda = ta ? m : k, ldb = tb ? k : n
            gemm(
                transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb,
                beta: 0.25, c: &fast, ldc: n)
            gemmNaive(
                transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb,
                beta: 0.25, c: &slow, ldc: n)
            // Each element sums k products of magnitude ≤ 0.5: float rounding stays far below 1e-3.
            for i in 0..<(m * n) where !(abs(fast[i] - slow[i]) <= 1e-3) { return false }
        }
        return true
    }
}
