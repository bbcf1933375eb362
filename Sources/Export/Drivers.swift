// The files that build and check an exported model: a host driver, a bare-metal Cortex-M driver
// (semihosting), the code they share, linker scripts for two QEMU boards, and a Makefile.

/// A Cortex-M board the exported model can be built for and run on under QEMU.
public struct CortexMTarget: Sendable, Equatable {
    public var name: String
    public var cpu: String
    /// QEMU's machine and, where the machine needs it, CPU.
    public var machine: String
    public var qemuCPU: String?
    public var flashBytes: Int
    public var ramBytes: Int
    /// The clock QEMU gives the board's SysTick (the driver turns its ticks into instructions).
    public var cpuHz: Int

    /// The micro:bit's nRF51 (a real Cortex-M0: 256 KB flash, 16 KB RAM).
    public static let m0 = CortexMTarget(
        name: "cortex-m0", cpu: "cortex-m0", machine: "microbit", qemuCPU: nil,
        flashBytes: 256 * 1024, ramBytes: 16 * 1024, cpuHz: 16_000_000)
    /// Arm's MPS2 AN385 board (Cortex-M3, 4 MB of each).
    public static let m3 = CortexMTarget(
        name: "cortex-m3", cpu: "cortex-m3", machine: "mps2-an385", qemuCPU: "cortex-m3",
        flashBytes: 4 * 1024 * 1024, ramBytes: 4 * 1024 * 1024, cpuHz: 25_000_000)
    /// Cortex-M0 code on the MPS2 board: ARMv6-M instructions, 4 MB of memory (for models larger than a micro:bit).
    public static let m0Large = CortexMTarget(
        name: "cortex-m0-large", cpu: "cortex-m0", machine: "mps2-an385",
        qemuCPU: "cortex-m3", flashBytes: 4 * 1024 * 1024, ramBytes: 4 * 1024 * 1024,
        cpuHz: 25_000_000)

    public var linkerScript: String { "\(name).ld" }
    public var stackBytes: Int { ramBytes >= 64 * 1024 ? 16 * 1024 : 2 * 1024 }
}

public enum Drivers {
    /// Soft-float routine names (Arm EABI `__aeabi_fadd`, `__aeabi_d2iz`, `__aeabi_l2f`; libgcc
    /// `__addsf3`, `__fixdfsi`, `__floatsisf`, `__truncdfsf2`): an ELF with none is float-free.
    public static let softFloatPattern = "^(__aeabi_([fd][a-z0-9]*|[a-z0-9]*2[fd])|__[a-z]*[sd]f[a-z0-9]*)$"

    static func linkerScript(_ t: CortexMTarget) -> String {
        """
        /* \(t.name): \(t.flashBytes / 1024) KB flash at 0, \(t.ramBytes / 1024) KB RAM at 0x20000000 (QEMU -M \(t.machine)).
           picolibc's picolibc.ld lays out the sections, the vector table and the startup code (crt0). */
        __flash = 0x0;
        __flash_size = \(t.flashBytes);
        __ram = 0x20000000;
        __ram_size = \(t.ramBytes);
        __stack_size = \(t.stackBytes);
        INCLUDE picolibc.ld

        """
    }

    static func shared(prefix: String) -> String { sharedIO + classify(prefix: prefix) }

    /// The driver's integer-only output and its IDX header reader.
    static let sharedIO = """
        /* qs_driver.h: the test driver shared by main_host.c and main_cortexm.c. It reads an IDX image file
         * and an IDX label file (uncompressed, as Fashion-MNIST's .gz files are after gunzip), classifies each
         * image, and prints one line per image with its integer logits, then the accuracy. Integer-only text
         * output (no printf), so the Cortex-M build links no floating-point code. */
        #include <stdio.h>
        #include <stdint.h>
        #include <string.h>
        #include "model.h"

        static void qs_put(const char *s) { fputs(s, stdout); }

        static void qs_put_int(int64_t v)
        {
            char text[24];
            int n = 0;
            uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            do { text[n++] = (char)('0' + (int)(u % 10)); u /= 10; } while (u != 0);
            if (v < 0) fputc('-', stdout);
            while (n > 0) fputc(text[--n], stdout);
        }

        static int qs_fail(const char *what, const char *path)
        {
            fputs("error: ", stderr); fputs(path, stderr); fputs(": ", stderr); fputs(what, stderr); fputs("\\n", stderr);
            return 2;
        }

        /* Reads an IDX header of unsigned bytes (magic 0x0000 08 dims); returns the item count, or -1, and
           the bytes of one item in *item. */
        static int64_t qs_idx_header(FILE *f, uint32_t *item)
        {
            uint8_t b[4];
            uint32_t dims, d;
            int64_t count = 0;
            if (fread(b, 1, 4, f) != 4 || b[0] != 0 || b[1] != 0 || b[2] != 0x08 || b[3] < 1 || b[3] > 4) return -1;
            dims = b[3];
            *item = 1;
            for (d = 0; d < dims; d++) {
                uint32_t size;
                if (fread(b, 1, 4, f) != 4) return -1;
                size = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
                if (d == 0) count = size;
                else if (size == 0 || *item > 0xFFFFFFu / size) return -1;
                else *item *= size;
            }
            return count;
        }


        """

    /// The driver's loop: read, classify and print each image, then the accuracy.
    static func classify(prefix: String) -> String {
        let g = prefix.uppercased()
        return """
            /* Called around each inference (timing, stack measurement); may be empty. */
            static void qs_before(int64_t index);
            static void qs_after(int64_t index);

            /* Classifies the first `limit` images (all when limit < 0); returns the exit status. */
            static int qs_classify(const char *images, const char *labels, int64_t limit, int64_t *correct_out, int64_t *count_out)
            {
                static uint8_t input[\(g)_INPUT_SIZE];
                int32_t logits[\(g)_NUM_CLASSES];
                FILE *fi = fopen(images, "rb"), *fl;
                int64_t n, nl, i, correct = 0;
                uint32_t item, label_item;
                if (!fi) return qs_fail("cannot open", images);
                fl = fopen(labels, "rb");
                if (!fl) { fclose(fi); return qs_fail("cannot open", labels); }
                n = qs_idx_header(fi, &item);
                nl = qs_idx_header(fl, &label_item);
                if (n < 0 || item != \(g)_INPUT_SIZE) { fclose(fi); fclose(fl); return qs_fail("not an IDX file of the model's input size", images); }
                if (nl < 0 || label_item != 1) { fclose(fi); fclose(fl); return qs_fail("not an IDX label file", labels); }
                if (nl < n) n = nl;
                if (limit >= 0 && limit < n) n = limit;
                for (i = 0; i < n; i++) {
                    uint8_t label;
                    int c, k;
                    if (fread(input, 1, \(g)_INPUT_SIZE, fi) != \(g)_INPUT_SIZE || fread(&label, 1, 1, fl) != 1) {
                        fclose(fi); fclose(fl); return qs_fail("ends early", images);
                    }
                    qs_before(i);
                    c = \(prefix)_predict(input, logits);
                    qs_after(i);
                    if (c == label) correct++;
                    qs_put("image "); qs_put_int(i); qs_put(" label "); qs_put_int(label);
                    qs_put(" predicted "); qs_put_int(c); qs_put(" logits");
                    for (k = 0; k < \(g)_NUM_CLASSES; k++) { qs_put(" "); qs_put_int(logits[k]); }
                    qs_put("\\n");
                }
                fclose(fi); fclose(fl);
                qs_put("images "); qs_put_int(n); qs_put("\\ncorrect "); qs_put_int(correct); qs_put("\\n");
                if (n > 0) {
                    int64_t basis = correct * 10000 / n;
                    qs_put("accuracy "); qs_put_int(basis / 100); qs_put(".");
                    qs_put_int(basis % 100 / 10); qs_put_int(basis % 10); qs_put("%\\n");
                }
                *correct_out = correct;
                *count_out = n;
                return 0;
            }

            """
    }

    static let hostMain = """
        /* main_host.c: classifies IDX test images on the host with the exported model.
         *   ./main_host IMAGES.idx LABELS.idx [COUNT]
         * Prints every prediction and its logits, then the accuracy. */
        #include <stdlib.h>
        #include "qs_driver.h"

        static void qs_before(int64_t index) { (void)index; }
        static void qs_after(int64_t index) { (void)index; }

        int main(int argc, char **argv)
        {
            int64_t correct = 0, count = 0;
            if (argc < 3) {
                fputs("usage: main_host IMAGES.idx LABELS.idx [COUNT]\\n", stderr);
                return 2;
            }
            return qs_classify(argv[1], argv[2], argc > 3 ? atol(argv[3]) : -1, &correct, &count);
        }

        """

    static let cortexMMain = """
        /* main_cortexm.c: the exported model on a bare-metal Cortex-M under QEMU, through semihosting.
         * Reads images.idx and labels.idx from the host's working folder (QS_IMAGES, QS_LABELS, QS_COUNT
         * override), prints what main_host prints, then the stack and the instructions one inference took.
         * Stack: the whole program's deepest during the first inference, from a painted stack. Instructions:
         * SysTick counts the core clock (QS_CPU_HZ), which under `qemu -icount shift=0` advances one
         * nanosecond per instruction, so ticks x 10^9 / QS_CPU_HZ are instructions (to one tick). Ends QEMU
         * with exit(). */
        #include <stdlib.h>
        #include "qs_driver.h"

        #ifndef QS_IMAGES
        #define QS_IMAGES "images.idx"
        #endif
        #ifndef QS_LABELS
        #define QS_LABELS "labels.idx"
        #endif
        #ifndef QS_COUNT
        #define QS_COUNT -1
        #endif
        #ifndef QS_CPU_HZ
        #define QS_CPU_HZ 16000000
        #endif
        #define QS_PAINT 0xA5u
        #define QS_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
        #define QS_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
        #define QS_SYST_CVR (*(volatile uint32_t *)0xE000E018u)

        extern uint8_t __heap_end[];   /* the bottom of the stack region (picolibc.ld) */
        extern uint8_t __stack[];      /* its top: the initial stack pointer */
        static uint32_t qs_started, qs_stack_used;
        static uint64_t qs_ticks;

        /* Before the first inference: starts SysTick (24 bits, counting down from the core clock) and
           paints the free stack below this frame, so the deepest stack can be read back afterwards. */
        static void qs_before(int64_t index)
        {
            volatile uint8_t here = 0;
            if (index == 0) {
                const uintptr_t below = (uintptr_t)&here - 64;
                uint8_t *p;
                for (p = __heap_end; (uintptr_t)p < below; p++) *p = QS_PAINT;
                QS_SYST_RVR = 0xFFFFFFu;
                QS_SYST_CVR = 0;
                QS_SYST_CSR = 5u;   /* enable, core clock, no interrupt */
            }
            qs_started = QS_SYST_CVR;
        }

        static void qs_after(int64_t index)
        {
            qs_ticks += (qs_started - QS_SYST_CVR) & 0xFFFFFFu;
            if (index == 0) {
                uint8_t *p = __heap_end;
                while (p < __stack && *p == QS_PAINT) p++;
                qs_stack_used = (uint32_t)(__stack - p);
            }
        }

        int main(void)
        {
            int64_t correct = 0, count = 0;
            int status = qs_classify(QS_IMAGES, QS_LABELS, QS_COUNT, &correct, &count);
            if (status == 0 && count > 0) {
                const uint64_t millitick = qs_ticks * 1000u / (uint64_t)count;
                qs_put("stack_bytes "); qs_put_int(qs_stack_used); qs_put("\\n");
                qs_put("instructions_per_inference ");
                qs_put_int((int64_t)(millitick * 1000000u / QS_CPU_HZ)); qs_put("\\n");
            }
            fflush(stdout);
            exit(status);
        }

        """

    static func makefile(prefix: String) -> String {
        let m0 = CortexMTarget.m0, m3 = CortexMTarget.m3
        func qemu(_ t: CortexMTarget) -> String {
            "qemu-system-arm -M \(t.machine)\(t.qemuCPU.map { " -cpu \($0)" } ?? "") -nographic -monitor none -serial none -semihosting-config enable=on,target=native -icount shift=0 -kernel"
        }
        return """
            # Builds and checks the exported model \(prefix).
            #   make host                 main_host, float-free: -mgeneral-regs-only refuses any floating point
            #   make run-host             classifies images.idx / labels.idx (IMAGES=, LABELS= to change)
            #   make cortex-m0            model_cortex-m0.elf for the micro:bit (arm-none-eabi-gcc, picolibc)
            #   make run-cortex-m0        runs it under QEMU (qemu-system-arm), reading images.idx by semihosting
            #   make cortex-m3 / run-cortex-m3   the same on the MPS2 AN385 board
            #   make check-float-free     lists soft-float symbols of the ELFs (there must be none)
            # Debian packages: gcc, gcc-arm-none-eabi, picolibc-arm-none-eabi, qemu-system-arm.
            CC       ?= cc
            CFLAGS   ?= -std=c99 -O2 -Wall -Wextra -Werror -mgeneral-regs-only
            ARM_CC   ?= arm-none-eabi-gcc
            ARM_FLAGS = -std=c99 -Os -Wall -Wextra -Werror -mthumb -mfloat-abi=soft -ffunction-sections -fdata-sections \\
                        -specs=picolibc.specs --oslib=semihost -Wl,--gc-sections
            IMAGES   ?= images.idx
            LABELS   ?= labels.idx
            MODEL     = model.c qshape_nn.c
            SOFT_FLOAT = '\(softFloatPattern.split(separator: "$", omittingEmptySubsequences: false).joined(separator: "$$"))'

            .PHONY: host run-host cortex-m0 cortex-m3 run-cortex-m0 run-cortex-m3 check-float-free clean

            host: main_host
            main_host: main_host.c qs_driver.h $(MODEL) model.h qshape_nn.h
            \t$(CC) $(CFLAGS) -o $@ main_host.c $(MODEL)
            run-host: main_host
            \t./main_host $(IMAGES) $(LABELS)

            cortex-m0: model_cortex-m0.elf
            model_cortex-m0.elf: main_cortexm.c qs_driver.h $(MODEL) model.h qshape_nn.h \(m0.linkerScript)
            \t$(ARM_CC) -mcpu=\(m0.cpu) -DQS_CPU_HZ=\(m0.cpuHz) $(ARM_FLAGS) -T\(m0.linkerScript) -o $@ main_cortexm.c $(MODEL)
            run-cortex-m0: model_cortex-m0.elf
            \t\(qemu(m0)) model_cortex-m0.elf

            cortex-m3: model_cortex-m3.elf
            model_cortex-m3.elf: main_cortexm.c qs_driver.h $(MODEL) model.h qshape_nn.h \(m3.linkerScript)
            \t$(ARM_CC) -mcpu=\(m3.cpu) -DQS_CPU_HZ=\(m3.cpuHz) $(ARM_FLAGS) -T\(m3.linkerScript) -o $@ main_cortexm.c $(MODEL)
            run-cortex-m3: model_cortex-m3.elf
            \t\(qemu(m3)) model_cortex-m3.elf

            check-float-free:
            \t@for f in *.elf; do if arm-none-eabi-nm $$f | awk '{print $$NF}' | grep -E $(SOFT_FLOAT); then \\
            \t  echo "$$f: soft-float symbols"; exit 1; fi; done; echo "no soft-float symbols"

            clean:
            \trm -f main_host *.elf *.o

            """
    }

    /// Every driver file, by name.
    static func files(prefix: String) -> [(name: String, contents: String)] {
        [
            ("qs_driver.h", shared(prefix: prefix)), ("main_host.c", hostMain),
            ("main_cortexm.c", cortexMMain),
            ("Makefile", makefile(prefix: prefix)),
            (CortexMTarget.m0.linkerScript, linkerScript(.m0)),
            (CortexMTarget.m3.linkerScript, linkerScript(.m3))
        ]
    }
}

extension CModel {
    /// The model's files and the drivers, Makefile and linker scripts that build and check it.
    public var allFiles: [(name: String, contents: String)] { files + Drivers.files(prefix: prefix) }

    /// A linker script for a target (for targets beyond the two the Makefile names).
    public static func linkerScript(_ t: CortexMTarget) -> String { Drivers.linkerScript(t) }
}
