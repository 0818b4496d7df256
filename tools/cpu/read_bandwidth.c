/* Read bandwidth by working-set size, 1 and 2 threads: where the caches end.
 *   gcc -O3 -march=native -fopenmp tools/cpu/read_bandwidth.c -o /tmp/read_bandwidth
 * Used for the note on demucs-dec1's filters in docs/results/cpu-history.md (64 MB direct, 96 MB in F(2,2))
 * against this machine kind's L3. AVX-512 loads; best of 15 passes per size. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
  size_t mbs[]={1,2,8,32,64,96,128,512}; /* MB */
  for(int th=1;th<=2;th++){ omp_set_num_threads(th);
  for(int i=0;i<8;i++){ size_t n=mbs[i]*(1<<20)/4; float*a=aligned_alloc(64,n*4); for(size_t j=0;j<n;j++)a[j]=1;
    double best=1e9; float sink=0;
    for(int r=0;r<15;r++){ double t=now(); float tot=0;
      #pragma omp parallel for reduction(+:tot)
      for(size_t j=0;j<n;j+=64){ __m512 s0=_mm512_load_ps(a+j),s1=_mm512_load_ps(a+j+16),s2=_mm512_load_ps(a+j+32),s3=_mm512_load_ps(a+j+48);
        s0=_mm512_add_ps(_mm512_add_ps(s0,s1),_mm512_add_ps(s2,s3)); tot+=_mm512_reduce_add_ps(s0);}
      t=now()-t; if(t<best)best=t; sink+=tot;}
    printf("threads %d %4zu MB: %.1f GB/s (%g)\n",th,mbs[i],mbs[i]/1024.0/best,sink); free(a);} }
}
