// Which steps run on two threads: a few steps of each kind timed every window, the faster kept.
/// Whether a step runs on two threads (the side thread gathers the batch during the last
/// optimiser update, then joins the loss terms) or on the main thread alone, chosen by timing
/// steps of each as training goes. On a quiet machine two threads win; when other work holds the
/// second processor, the side thread gets little of it and the main thread waits, and one thread
/// can win. The trained weights are the same bits either way, so only the time depends on the choice.
///
/// Every `window` steps begin with `probes` steps of each kind; the rest of the window runs the
/// kind whose median probe was faster. A probe's time is the whole step's, optimiser included:
/// under load, the side thread's cost can show there.
struct ParallelChoice {
    static let window = 128, probes = 3
    private var serialTimes: [Double] = [], parallelTimes: [Double] = []
    private var parallelWins = true
    private(set) var step = 0

    /// Whether step number `s` (counted over the whole training) runs in parallel.
    func isParallel(_ s: Int) -> Bool {
        let k = s % ParallelChoice.window
        if k < ParallelChoice.probes { return false }
        if k < 2 * ParallelChoice.probes { return true }
        return parallelWins
    }

    /// Whether the current step runs in parallel.
    var current: Bool { isParallel(step) }

    /// Whether the next step's kind is known before the current one is recorded (not after the
    /// last probe, whose time decides it).
    var nextIsKnown: Bool { step % ParallelChoice.window != 2 * ParallelChoice.probes - 1 }

    /// Whether the next step runs in parallel, when `nextIsKnown`.
    var next: Bool { isParallel(step + 1) }

    /// Records the current step's time and moves to the next step.
    mutating func record(seconds: Double) {
        let k = step % ParallelChoice.window
        if k < ParallelChoice.probes {
            serialTimes.append(seconds)
        } else if k < 2 * ParallelChoice.probes {
            parallelTimes.append(seconds)
            if k == 2 * ParallelChoice.probes - 1 {
                parallelWins = median(parallelTimes) <= median(serialTimes)
                serialTimes = []; parallelTimes = []
            }
        }
        step += 1
    }

    private func median(_ x: [Double]) -> Double { x.sorted()[x.count / 2] }
}
