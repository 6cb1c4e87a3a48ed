/* bench/gpu/hbm_peak.cu - prints the peak memory bandwidth of CUDA device 0.
 *
 * Built and run by bench/gpu/check.sh (nvcc hbm_peak.cu): peak bytes/s =
 * memory clock (kHz) * 1000 * 2 (double data rate) * bus width (bits) / 8,
 * the same figure NVIDIA's data sheets give (H100 SXM: 2619 MHz, 5120 bits,
 * 3.35 TB/s). One line: "<name>\t<bytes per second>".
 */
#include <cuda_runtime.h>
#include <stdio.h>

int main(void) {
    int clock_khz = 0, bus_bits = 0;
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, 0) != cudaSuccess ||
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) != cudaSuccess) {
        fprintf(stderr, "hbm_peak: no CUDA device\n");
        return 1;
    }
    printf("%s\t%.0f\n", prop.name, (double)clock_khz * 1000.0 * 2.0 * (double)bus_bits / 8.0);
    return 0;
}
