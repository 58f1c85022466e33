// SwiftPM (tools >= 5.5) renames an executable's entry point to `<module>_main` and links
// `main` to it, so libFuzzer's own main() is never used. Each target's main.swift therefore
// starts libFuzzer explicitly through LLVMFuzzerRunDriver, the documented entry point for
// programs that have their own main().
#include "CFuzzDriver.h"

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

static toki_fuzz_test_one_input user_callback;

static int call_user(const uint8_t *data, size_t size) {
    static const uint8_t empty = 0;
    return user_callback(data != NULL ? data : &empty, size);
}

int toki_fuzz_run(int argc, char **argv, toki_fuzz_test_one_input test_one_input) {
    user_callback = test_one_input;
    return LLVMFuzzerRunDriver(&argc, &argv, call_user);
}
