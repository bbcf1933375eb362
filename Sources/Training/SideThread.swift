// A second thread that runs one job at a time beside the caller (the step overlap's helper).
import Foundation
import Synchronization
import CThreads

/// One job at a time on a second thread, beside the caller's own work: in the training loop it
/// gathers the next batch while the main thread runs the optimiser update, then helps with the
/// update and the shaping penalties (Docs/Performance.md). `run` hands a job over; `wait` returns
/// when it is done, with its writes visible to the caller. If the thread has not started the job
/// by then (its processor busy with other work), the caller takes the job back and runs it itself.
///
/// Jobs are numbered. The thread sleeps on a semaphore between jobs, one signal per job; woken,
/// it spins until its job is posted and then claims it, as the caller may, by moving `claimed`
/// from the job's number less one to its number: whoever does runs it. The caller waits by
/// spinning with `sched_yield`, since a job usually ends while the main thread is still busy, and
/// a sleeping waiter would pay a wake-up (about 20 µs here) every step.
final class SideThread: @unchecked Sendable {
    /// The number of the last job posted, claimed, and finished by the thread; `stopping` ends it.
    private let posted = Atomic<Int>(0), claimed = Atomic<Int>(0), finished = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)
    /// Written by the caller before the releasing store to `posted`, read by the thread after it
    /// has claimed the job.
    private var job: (() -> Void)?
    /// The caller's count of jobs, and whether the next one's signal has been given (`prepare`).
    private var jobs = 0, signalled = false
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
        var number = 0
        while true {
            wake.wait()
            if stopping.load(ordering: .acquiring) { return }
            number += 1
            while posted.load(ordering: .acquiring) < number {
                if stopping.load(ordering: .acquiring) { return }
                sched_yield()
            }
            guard
                claimed.compareExchange(
                    expected: number - 1, desired: number, ordering: .acquiringAndReleasing
                ).exchanged
            else {
                continue  // the caller took it back
            }
            job!()
            finished.store(number, ordering: .releasing)
        }
    }

    /// Wakes the thread ahead of the next `run`, which must follow soon: until it does, the
    /// thread spins. Done before a stretch of single-threaded work (the optimiser step), the
    /// wake-up is over by the time the job comes.
    func prepare() {
        guard !signalled else { return }
        signalled = true
        wake.signal()
    }

    /// Starts `body` on the thread. The previous job must have been waited for.
    func run(_ body: @escaping () -> Void) {
        // Woken, the thread would often be put on the caller's processor (the kernel favours the
        // waker's cache), and the two would take turns there while the other processor spun.
        let here = qs_current_processor(), id = threadID.load(ordering: .acquiring)
        if here != avoidedProcessor, id != 0, qs_keep_off_processor(id, here) == 0 { avoidedProcessor = here }
        jobs += 1
        job = body
        posted.store(jobs, ordering: .releasing)
        if !signalled { wake.signal() }
        signalled = false
    }

    /// Returns when the job is done: run here if the thread has not started it.
    func wait() {
        if claimed.compareExchange(expected: jobs - 1, desired: jobs, ordering: .acquiringAndReleasing)
            .exchanged
        {
            job!()
        } else {
            while finished.load(ordering: .acquiring) < jobs { sched_yield() }
        }
        job = nil
    }

    /// Ends the thread. The last job must have been waited for; the object must not be used
    /// afterwards.
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake.signal()
    }
}
