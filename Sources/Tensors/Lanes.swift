// The 16-lane Float vector of the elementwise passes, with loads and stores.
/// The vector width of the elementwise passes over weights (Adam, the shaping penalties): 16 Float
/// lanes, one AVX-512 register (two AVX2 ones, four SSE ones on the x86-64 baseline). On the Zen 4
/// development machine 16 lanes ran the penalty passes 15–20% faster than 8, built for it or for
/// AVX2 alike; the SSE2 baseline, short of registers, runs the KURE passes slower (Docs/Performance.md).
/// One width for every build keeps every sum in the same order: the results do not depend on it.
public typealias Lanes = SIMD16<Float>

@inlinable @inline(__always)
public func loadLanes(_ p: UnsafePointer<Float>) -> Lanes {
    UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
}

@inlinable @inline(__always)
public func storeLanes(_ x: Lanes, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: x, as: Lanes.self)
}
