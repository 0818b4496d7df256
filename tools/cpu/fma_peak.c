#include <immintrin.h>
#include <stdio.h>
#include <omp.h>
int main(){
  long iters=200000000;
  double best=0;
  for(int rep=0;rep<5;rep++){
  double t0=omp_get_wtime();
  float sink=0;
  #pragma omp parallel reduction(+:sink)
  {
    __m512 a[12]; __m512 b=_mm512_set1_ps(1.0000001f), c=_mm512_set1_ps(1e-9f);
    for(int i=0;i<12;i++) a[i]=_mm512_set1_ps(i);
    for(long it=0;it<iters/12/ 1;it+=1){
      #pragma GCC unroll 12
      for(int i=0;i<12;i++) a[i]=_mm512_fmadd_ps(a[i],b,c);
    }
    for(int i=0;i<12;i++) sink+=_mm512_reduce_add_ps(a[i]);
  }
  double t=omp_get_wtime()-t0;
  int nt=omp_get_max_threads();
  double gf=(double)(iters/12)*12*16*2*nt/t/1e9;
  if(gf>best)best=gf;
  printf("%d threads %.1f GFLOP/s (%f)\n",nt,gf,sink);
  }
  printf("best %.1f\n",best);
}
