import Foundation
import Synchronization
import Tensors
import CThreads

/// One job at a time on a second thread, beside the caller's own work: the training loop runs the
/// shaping penalties on it while the main thread gathers the batch and runs the forward pass
/// (Docs/Performance.md). `run` hands a job over; `wait` returns when it is done, with its
/// writes visible to the caller.
///
/// The thread sleeps on a semaphore between jobs. The caller waits by spinning with
/// `sched_yield`, since a job usually ends while the main thread is still busy, and a sleeping
/// waiter would pay a wake-up (tens of µs here) every step.
final class SideThread: @unchecked Sendable {
    private static let idle = 0, posted = 1, done = 2, stopping = 3
    private let state = Atomic<Int>(SideThread.idle)
    private let wake = DispatchSemaphore(value: 0)
    /// Written by the caller before the releasing store of `posted`, read by the thread after
    /// its acquiring load.
    private var job: (() -> Void)?

    /// The thread's kernel id (0 until it has started), and the processor it was last kept off.
    private let threadID = Atomic<Int32>(0)
    private var avoidedProcessor: Int32 = -1

    init() {
        let thread = Thread { [self] in
            threadID.store(qs_thread_id(), ordering: .releasing)
            loop()
        }
        thread.name = "qshape.side"
        thread.start()
    }

    private func loop() {
        while true {
            wake.wait()
            var s = state.load(ordering: .acquiring)
            while s == SideThread.idle || s == SideThread.done { sched_yield(); s = state.load(ordering: .acquiring) }
            if s == SideThread.stopping { return }
            job!()
            job = nil
            state.store(SideThread.done, ordering: .releasing)
        }
    }

    /// Whether the thread has been woken for a job not yet posted.
    private var prepared = false

    /// Wakes the thread ahead of the next `run`, which must follow soon: until it does, the
    /// thread spins. Waking takes about 20 µs here; done before a stretch of single-threaded work
    /// (the optimiser step), it is over by the time the job comes.
    func prepare() {
        guard !prepared else { return }
        prepared = true
        wake.signal()
    }

    /// Starts `body` on the thread. The previous job must have been waited for.
    func run(_ body: @escaping () -> Void) {
        precondition(state.load(ordering: .relaxed) == SideThread.idle, "SideThread.run before the last job was waited for")
        // Woken, the thread would often be put on the caller's processor (the kernel favours the
        // waker's cache), and the two would take turns there while the other processor spun.
        let here = qs_current_processor(), id = threadID.load(ordering: .acquiring)
        if here != avoidedProcessor, id != 0, qs_keep_off_processor(id, here) == 0 { avoidedProcessor = here }
        job = body
        state.store(SideThread.posted, ordering: .releasing)
        if !prepared { wake.signal() }
        prepared = false
    }

    /// Returns when the running job has finished; meanwhile runs blocks of its loops shared
    /// through `helping`.
    func wait(helping: BlockSharing? = nil) {
        while state.load(ordering: .acquiring) != SideThread.done {
            if !(helping?.help() ?? false) { sched_yield() }
        }
        state.store(SideThread.idle, ordering: .relaxed)
    }

    /// Ends the thread (after its current job). The object must not be used afterwards.
    func stop() {
        if state.load(ordering: .acquiring) == SideThread.posted { wait() }
        state.store(SideThread.stopping, ordering: .releasing)
        if !prepared { wake.signal() }
    }
}
