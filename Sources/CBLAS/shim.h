#include <cblas.h>
// Provided by OpenBLAS; declared here so Swift can size its thread pool per call.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
// The kernel set OpenBLAS chose at load ("Haswell", "SkylakeX", "Prescott", …) and its build line.
char *openblas_get_corename(void);
char *openblas_get_config(void);
