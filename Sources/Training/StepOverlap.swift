// How one training step overlaps its two independent parts on a second core: gathering the batch
// (the data) and the loss terms (the shaping penalties, which read only the weights). The epoch
// loop makes one call per step (`run`) and gives one hint (`stepEnded`); all the thread machinery
// (SideThread, BlockSharing, ParallelChoice) stays behind this type.
import Foundation
import Synchronization
import Tensors

/// The overlap of batch gathering and loss terms within a step. The side thread gathers the batch
/// while this thread runs the loss terms, then joins their loops (`BlockSharing`): the weights and
/// gradients stay in this thread's cache, and the batch is the smaller thing to move. Every few
/// steps both ways are timed and the faster kept (`ParallelChoice`). The work and its order are
/// the same either way, and so are the trained weights.
final class StepOverlap {
    /// The thread that gathers the batch, made on first use.
    private var side: SideThread?
    /// How the side thread joins the loss terms' loops once it has gathered the batch, and
    /// whether they are done (it then stops helping).
    private let sharing = BlockSharing()
    private let termsDone = Atomic<Bool>(false)
    private var choice = ParallelChoice()
    private let enabled: Bool

    /// `enabled`: the config allows it (`training.overlap`); it is used only with loss terms to
    /// overlap and a second core.
    init(enabled: Bool, hasLossTerms: Bool) {
        self.enabled = enabled && hasLossTerms && ProcessInfo.processInfo.activeProcessorCount > 1
    }

    deinit { side?.stop() }

    /// Runs `terms` and `gather` (in that order on one thread, or overlapped on two).
    func run(terms: () -> Void, gather: @escaping @Sendable () -> Void) {
        guard enabled, choice.current else {
            terms()
            gather()
            return
        }
        if side == nil { side = SideThread() }
        termsDone.store(false, ordering: .relaxed)
        side!.run { [self] in
            gather()
            while !termsDone.load(ordering: .acquiring) { if !sharing.help() { sched_yield() } }
        }
        BlockSharing.$current.withValue(sharing, operation: terms)
        termsDone.store(true, ordering: .releasing)
        side!.wait()  // gathers the batch here if the side thread never started
    }

    /// The step's optimiser update, with the step's timing recorded. The side thread's wake-up
    /// overlaps the update when the next step will use it; after the last probe of a window, whose
    /// time decides the next step's kind, it is woken after the update.
    func update(stepStart: ContinuousClock.Instant, isLast: Bool, _ body: () -> Void) {
        guard enabled else { return body() }
        let known = choice.nextIsKnown
        if !isLast, known, choice.next { prepareSide() }
        body()
        choice.record(seconds: seconds(ContinuousClock.now - stepStart))
        if !isLast, !known, choice.current { prepareSide() }
    }

    private func prepareSide() {
        if side == nil { side = SideThread() }
        side!.prepare()
    }
}

/// One step's batch, as the side thread leaves it.
final class BatchSlot: @unchecked Sendable {
    var value: (Tensor, [Int32])?
}
