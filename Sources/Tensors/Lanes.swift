/// The vector width of the elementwise passes over weights (Adam, the shaping penalties): 16 Float
/// lanes, one AVX-512 register (two AVX2 ones, four SSE ones on the x86-64 baseline). Measured on
/// the Zen 4 development machine, 16 lanes ran the penalty passes 20–25% faster than 8.
public typealias Lanes = SIMD16<Float>

@inlinable @inline(__always)
public func loadLanes(_ p: UnsafePointer<Float>) -> Lanes {
    UnsafeRawPointer(p).loadUnaligned(as: Lanes.self)
}

@inlinable @inline(__always)
public func storeLanes(_ x: Lanes, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: x, as: Lanes.self)
}
