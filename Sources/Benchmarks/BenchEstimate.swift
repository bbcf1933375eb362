// How long `qshape bench` will take, said before it starts: each part's time on a reference
// machine, scaled by how fast this one runs a single-thread SGEMM compared with it.
import Foundation

extension BenchWorkflow {
    /// Seconds each part took on the reference machine (a shared 2-core AMD EPYC, Zen 4 with
    /// AVX-512, OpenBLAS 0.3.21 Cooperlake kernels, 2026-12-02), run one part at a time; `shaping`
    /// since it runs in alternating chunks (2026-12-03): 92 s on a Zen 3 at 0.84× its speed.
    static let referenceSeconds: [Section: Double] = [
        .sgemm: 0.7, .training: 6.1, .profile: 2.6, .shaping: 78, .inference: 4.4,
        .export: 24, .memory: 18, .advise: 21
    ]
    /// Single-thread SGEMM GFLOP/s at 512³ on that machine.
    static let referenceSGEMM = 96.5

    /// The expected duration of `sections` on this machine, and this machine's speed relative to
    /// the reference (a 512³ SGEMM on one thread, best of three: a few milliseconds).
    public static func estimate(_ sections: Set<Section>) -> (seconds: Double, speed: Double) {
        let probe = sgemmRate(m: 512, n: 512, k: 512, threads: 1, reps: 3)
        let speed = min(8, max(0.125, probe / referenceSGEMM))
        let sum = sections.reduce(0) { $0 + (referenceSeconds[$1] ?? 0) }
        return (sum / speed, speed)
    }

    /// "about 4 min" / "about 40 s".
    static func duration(_ seconds: Double) -> String {
        seconds >= 90
            ? String(format: "about %.0f min", seconds / 60) : String(format: "about %.0f s", max(1, seconds))
    }
}
