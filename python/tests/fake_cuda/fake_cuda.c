/* A stand-in for libcuda.so.1 used by test_device_guard.py: reports one address range as
 * device memory, everything else as unknown to the driver (host memory). */
#include <stdint.h>

static uint64_t dev_base, dev_len;

void fake_set_device_range(uint64_t base, uint64_t len) {
    dev_base = base;
    dev_len = len;
}

int cuPointerGetAttribute(void *data, int attribute, uint64_t ptr) {
    if (ptr >= dev_base && ptr - dev_base < dev_len) {
        if (attribute == 2) { /* CU_POINTER_ATTRIBUTE_MEMORY_TYPE */
            *(unsigned *)data = 2; /* CU_MEMORYTYPE_DEVICE */
            return 0;
        }
        if (attribute == 8) { /* CU_POINTER_ATTRIBUTE_IS_MANAGED */
            *(unsigned *)data = 0;
            return 0;
        }
    }
    return 1; /* CUDA_ERROR_INVALID_VALUE */
}
