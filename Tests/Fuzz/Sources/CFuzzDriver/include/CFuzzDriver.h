#ifndef TOKI_FUZZ_DRIVER_H
#define TOKI_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// The fuzz target's callback; `data` is never NULL (an empty input gets a valid pointer).
typedef int (*toki_fuzz_test_one_input)(const uint8_t *_Nonnull data, size_t size);

/// Runs libFuzzer (LLVMFuzzerRunDriver) with the process arguments and returns its exit code.
int toki_fuzz_run(int argc, char *_Nullable *_Nonnull argv, toki_fuzz_test_one_input _Nonnull test_one_input);

#endif
