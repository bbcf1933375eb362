// Threads sharing the blocks of one loop, their sums kept in block order (same result on 1 or 2).
import Synchronization
import CProcessor
#if canImport(Glibc)
    import Glibc
#endif

/// Threads sharing the blocks of one loop at a time. The thread that owns the work calls
/// `forEach`; others call `helpUntil` while they have nothing better to do and run blocks of
/// the loops as they open. The training loop uses it for the optimiser update and the shaping penalties
/// (`forEachBlock`, `sumBlocks` in Shaping): they run on the main thread, and a second thread joins
/// them when it has gathered the next batch.
///
/// Which thread runs which block changes from run to run, so callers keep each block's result
/// apart and combine them in block order afterwards (`sumBlocks` in Shaping does): the results
/// are the same bits whichever threads ran them.
///
/// One word holds the open loop: a generation (24 bits) and the unclaimed blocks' range, its
/// front and back (20 bits each). Blocks are claimed, a run of them at a time (`claim`), by a
/// compare-and-exchange on that word, so a helper holding a stale word from a finished loop
/// cannot claim a block of the next one; the owner returns only after every claimed block has
/// finished, so the loop's body outlives its use.
public final class BlockSharing: @unchecked Sendable {
    /// The sharing the current thread's loops may use (none: they run alone).
    @TaskLocal public static var current: BlockSharing?

    /// The most blocks one shared loop may have; `forEach` runs larger ones alone.
    public static let maximumBlocks = 1 << 20 - 1

    private let word = Atomic<UInt64>(0)
    private let finished = Atomic<Int>(0)
    /// The open loop's body. Written by the owner before it publishes the loop's word (releasing),
    /// read by a helper after it has claimed a block of that loop (acquiring).
    private var body: ((Int) -> Void)?

    public init() {}

    private static func pack(generation: UInt64, front: Int, back: Int) -> UInt64 {
        (generation & 0xFF_FFFF) << 40 | UInt64(front) << 20 | UInt64(back)
    }

    /// Claims the next blocks of the loop `w` describes, if it has some left and is still open:
    /// from the front for the owner, from the back for helpers, a quarter of those left (at least
    /// one) each time. A loop of n blocks then takes about 4·log₂(n) claims, the last ones single
    /// blocks that even out the threads' shares; and as the threads meet near the same block in
    /// loop after loop over the same weights, each keeps finding its part in its own cache. One
    /// claim per block made the word's cache line cross between the processors at every block of
    /// 4 KB, which cost about as much as the block.
    private func claim(_ w: UInt64, fromFront: Bool) -> Range<Int>? {
        var current = w
        while true {
            let front = Int(current >> 20 & 0xF_FFFF), back = Int(current & 0xF_FFFF)
            guard current >> 40 == w >> 40, front < back else { return nil }
            let take = Swift.max(1, (back - front) / 4)
            let desired = fromFront ? current + UInt64(take) << 20 : current - UInt64(take)
            let (exchanged, seen) = word.compareExchange(
                expected: current, desired: desired, successOrdering: .acquiring, failureOrdering: .relaxed)
            if exchanged { return fromFront ? front..<(front + take) : (back - take)..<back }
            current = seen
        }
    }

    /// Runs `body(b)` for every b in 0..<count, some of them on helping threads; returns when all
    /// have finished. Only one thread may own loops of one `BlockSharing`, one loop at a time.
    public func forEach(_ count: Int, _ body: (Int) -> Void) {
        guard count > 1, count <= BlockSharing.maximumBlocks else {
            for b in 0..<count { body(b) }
            return
        }
        withoutActuallyEscaping(body) { body in
            self.body = body
            finished.store(0, ordering: .relaxed)
            let open = BlockSharing.pack(
                generation: (word.load(ordering: .relaxed) >> 40) + 1, front: 0, back: count)
            word.store(open, ordering: .releasing)
            let mine = drain(open, fromFront: true, body)
            let all = finished.add(mine, ordering: .acquiringAndReleasing).newValue
            if all < count { waitForHelpers(count) }
            self.body = nil
        }
    }

    /// How long a thread waiting on another spins (looks with the processor's pause hint) before
    /// it gives up its processor at each look (`sched_yield`). A system call at each look put
    /// one between a signal and the waiter seeing it, in every loop: a shared plain sum of 16 blocks
    /// was slower than one thread's. A pause took 29 ns on the Zen 3 this was measured on (about
    /// 40 on Intel since Skylake). The owner, waiting for a helper's last blocks, spins about 30 µs,
    /// far longer than a block takes. A helper, between loops, spins about 4 µs, long enough to
    /// catch the next of a run of loops (a layer's passes, the next layer's): the training loop's
    /// helper then waits through the next step's forward and backward passes, whose BLAS threads
    /// need both processors, and gives up its processor there.
    static let ownerSpins = 1024, helperSpins = 128

    /// Waits until `done()`: `spins` looks with the pause hint, then a `sched_yield` at each look.
    @inline(__always)
    private static func wait(spins: Int, until done: () -> Bool) {
        var spun = 0
        while !done() {
            if spun < spins {
                spun += 1
                qs_spin_pause()
            } else {
                sched_yield()
            }
        }
    }

    /// The owner's wait for blocks that helpers claimed and are still running.
    private func waitForHelpers(_ count: Int) {
        BlockSharing.wait(spins: BlockSharing.ownerSpins) { finished.load(ordering: .acquiring) >= count }
    }

    /// Helps with this sharing's loops (`help`) until `done()`: what a helping thread does while
    /// it has nothing better to do.
    public func helpUntil(_ done: () -> Bool) {
        while !done() { BlockSharing.wait(spins: BlockSharing.helperSpins) { done() || help() } }
    }

    /// Runs blocks of the open loop until it has none left to claim; returns whether it ran any.
    private func help() -> Bool {
        let ran = helpDrain(word.load(ordering: .relaxed))
        guard ran > 0 else { return false }
        finished.add(ran, ordering: .releasing)
        return true
    }

    /// Claims and runs blocks of the loop `open` describes until none is left; returns how many.
    private func drain(_ open: UInt64, fromFront: Bool, _ each: (Int) -> Void) -> Int {
        var ran = 0
        while let blocks = claim(open, fromFront: fromFront) {
            for b in blocks { each(b) }
            ran += blocks.count
        }
        return ran
    }

    /// `drain` on a helper, which takes the loop's body once, after its first claim (which makes
    /// the body that loop's). Each copy of the body writes the reference count of its context, in
    /// the line the owner reads at every block: a copy per block kept that line crossing between
    /// the processors, and every block on either thread took twice as long as alone (a shared
    /// plain sum was no faster than one thread's). Not inlined: the helper's reference to the body
    /// ends inside it, before `finished` tells the owner, whose `withoutActuallyEscaping` checks
    /// that none is left.
    @inline(never)
    private func helpDrain(_ open: UInt64) -> Int {
        guard let first = claim(open, fromFront: false) else { return 0 }
        let body = self.body!
        for b in first { body(b) }
        return first.count + drain(open, fromFront: false, body)
    }
}

extension BlockSharing {
    /// How many blocks of at most `size` values `range` has.
    @inlinable
    public static func blockCount(_ range: Range<Int>, size: Int) -> Int { (range.count + size - 1) / size }

    /// Block `b` of `range` cut into blocks of at most `size` values.
    @inlinable
    public static func block(_ b: Int, of range: Range<Int>, size: Int) -> Range<Int> {
        let start = range.lowerBound + b * size
        return start..<Swift.min(range.upperBound, start + size)
    }

    /// `body(b, block b)` for every block of at most `size` values of `range`: shared with the
    /// current sharing's helpers when there is one and more than one block, else in order here.
    /// For loops whose blocks do not depend on each other (an optimiser's update).
    public static func forEachBlock(of range: Range<Int>, size: Int, _ body: (Int, Range<Int>) -> Void) {
        let count = blockCount(range, size: size)
        guard count > 1, let sharing = current else {
            for b in 0..<count { body(b, block(b, of: range, size: size)) }
            return
        }
        sharing.forEach(count) { b in body(b, block(b, of: range, size: size)) }
    }
}
