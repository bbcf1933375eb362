// libm functions under stable names, and the allocator tuning for training loops.
#if canImport(Glibc)
    import Glibc
    import CMalloc
#elseif canImport(Darwin)
    import Darwin
#endif

// Thin, inlinable wrappers so other files need not import the C library themselves.
@inline(__always) public func _log(_ x: Double) -> Double { log(x) }
@inline(__always) public func _exp(_ x: Double) -> Double { exp(x) }
@inline(__always) public func _cos(_ x: Double) -> Double { cos(x) }
@inline(__always) public func _expf(_ x: Float) -> Float { expf(x) }
@inline(__always) public func _logf(_ x: Float) -> Float { logf(x) }
@inline(__always) public func _pow(_ x: Double, _ y: Double) -> Double { pow(x, y) }

/// Process-wide allocator tuning for training loops.
public enum Allocator {
    /// Keeps large freed blocks in the heap instead of returning them to the kernel: a training
    /// step allocates and frees the same multi-megabyte buffers every time, and glibc's default
    /// (mmap for blocks ≥ 128 KiB) made the kernel zero fresh pages on every step.
    public static func keepLargeBlocks() {
        #if canImport(Glibc)
            _ = mallopt(M_MMAP_THRESHOLD, 1 << 30)
            _ = mallopt(M_TRIM_THRESHOLD, 1 << 30)
        #endif
    }
}
