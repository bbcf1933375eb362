// How one training step overlaps its independent parts on a second core: gathering the next
// batch (the data) during this step's optimiser update, then the rest of that update and the loss
// terms (the shaping penalties, which read only the weights), shared by both threads. The epoch
// loop makes one call per step for each (`update`, `run`) and one at its end (`finish`); all the
// thread machinery (SideThread, BlockSharing, ParallelChoice) stays behind this type.
import Foundation
import Synchronization
import Tensors

/// The overlap of batch gathering, loss terms and the optimiser update. While the main thread
/// starts the update of step t (about a tenth of an MLP step), the side thread gathers step
/// t + 1's batch, then joins the update's remaining blocks and, with loss terms, waits for step
/// t + 1's and joins their loops (`BlockSharing`): the batch is the smaller thing to move, and the
/// loss terms start on the main thread, where the update left the weights. Where the next batch
/// is not known in time (the first step of an epoch), the side thread gathers it while the main
/// thread runs the loss terms. Every few steps
/// both ways are timed and the faster kept (`ParallelChoice`). The work and its order are the
/// same either way, and so are the trained weights.
final class StepOverlap {
    /// The thread that gathers the batch, made on first use (`side`).
    private var made: SideThread?
    private var side: SideThread {
        if made == nil { made = SideThread() }
        return made!
    }
    /// How the side thread joins the update's and the loss terms' loops once it has gathered the
    /// batch, and whether they are done (it then stops helping).
    private let sharing = BlockSharing()
    private let helpEnds = Atomic<Bool>(false)
    private var choice = ParallelChoice()
    private let enabled: Bool, hasLossTerms: Bool
    /// Whether the side thread's job holds the next step's batch (gathered during the update).
    private(set) var prefetched = false

    /// `enabled`: the config allows it (`training.overlap`); it is used only with a second core.
    init(enabled: Bool, hasLossTerms: Bool) {
        self.enabled = enabled && ProcessInfo.processInfo.activeProcessorCount > 1
        self.hasLossTerms = hasLossTerms
    }

    deinit { made?.stop() }

    /// Runs `terms` and the batch's gathering: `gather` nil when `prefetched` (the side thread
    /// has it or is on it, and helps with `terms` once done); else in that order on one thread,
    /// or overlapped on two.
    func run(terms: () -> Void, gather: (@Sendable () -> Void)?) {
        guard let gather else {
            precondition(prefetched, "no batch was gathered ahead")
            prefetched = false
            shareTerms(terms)
            return
        }
        guard enabled, hasLossTerms, choice.current else {
            terms()
            gather()
            return
        }
        startSide(gather)
        shareTerms(terms)
    }

    /// The step's optimiser update, with the step's timing recorded. `gatherNext` gathers the
    /// next step's batch (nil for an epoch's last step): when the next step runs on two threads
    /// and that is known now, the side thread does it during the update, and the result is
    /// `true` (the next `run` then takes no `gather`). Otherwise the side thread is only woken
    /// ahead of the next step's loss terms, after the last probe of a window (whose time decides
    /// the next step's kind) once the update is over.
    func update(
        stepStart: ContinuousClock.Instant, gatherNext: (@Sendable () -> Void)?, _ body: () -> Void
    ) -> Bool {
        guard enabled else {
            body()
            return false
        }
        let known = choice.nextIsKnown
        if let gatherNext, known, choice.next {
            startSide(gatherNext)
            prefetched = true
        }
        if prefetched {
            BlockSharing.$current.withValue(sharing, operation: body)
            if !hasLossTerms { helpEnds.store(true, ordering: .releasing) }
        } else {
            body()
        }
        choice.record(seconds: seconds(ContinuousClock.now - stepStart))
        if gatherNext != nil, !known, choice.current, hasLossTerms { side.prepare() }
        return prefetched
    }

    /// Ends a batch gathered ahead that will not be used (the epoch ended early).
    func finish() {
        guard prefetched else { return }
        prefetched = false
        helpEnds.store(true, ordering: .releasing)
        side.wait()
    }

    /// Hands the side thread its job: `gather`, then help until told to stop.
    private func startSide(_ gather: @escaping @Sendable () -> Void) {
        helpEnds.store(false, ordering: .relaxed)
        side.run { [self] in
            gather()
            helpUntilDone()
        }
    }

    /// The loss terms on this thread, with the side thread joining their loops; returns when both
    /// are done.
    private func shareTerms(_ terms: () -> Void) {
        BlockSharing.$current.withValue(sharing, operation: terms)
        helpEnds.store(true, ordering: .releasing)
        side.wait()  // gathers the batch here if the side thread never started
    }

    /// The side thread's part of the update and the loss terms: it helps with their loops until
    /// told to stop (after the loss terms; after the update when there are none).
    private func helpUntilDone() {
        sharing.helpUntil { helpEnds.load(ordering: .acquiring) }
    }
}

/// One step's batch, as the side thread leaves it.
final class BatchSlot: @unchecked Sendable {
    var value: (Tensor, [Int32])?
}
