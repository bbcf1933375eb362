#include <cblas.h>
// Provided by OpenBLAS; declared here so Swift can size its thread pool per call.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
