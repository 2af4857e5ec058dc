"""Slabs centred on every thin slice (a sliding 5-slice average; each phase of slices run as its own 5 mm volume)
against the plain slabs of thin_vs_slab.py, per lesion. Not built (no lesion changed by more than 0.04, 5x the
network time).

    python sliding.py MODEL SEED [SEED ...]
"""
import sys, numpy as np
sys.path.insert(0, __import__("os").path.dirname(__file__))
import thin_vs_slab as t
from scipy import ndimage as ndi
syn=t.Synthesizer(sys.argv[1],device='cpu')
K=t.K
def sliding(ct, brain):
    n=ct.shape[0]
    sm=ndi.uniform_filter1d(ct, K, axis=0, mode='nearest')
    bm=ndi.uniform_filter1d(brain.astype(np.float32), K, axis=0, mode='nearest')
    out=np.zeros(ct.shape,np.float32)
    for p in range(K):
        idx=np.arange(p,n,K)
        b=(bm[idx]>0.5).astype(np.uint8)
        if not b.any(): continue
        out[idx]=syn.predict_volume(sm[idx], b, (5.0,1.8,1.8))[0]
    return out
for seed in (int(s) for s in sys.argv[2:]):
    c=t.thin_case(seed); ct,brain,lesion,dwi=c["ct"],c["brain"],c["lesion"],c["dwi"]; n=ct.shape[0]
    ct_s,brain_s=t.to_slabs(ct,t.blocks(n,K)),t.slab_mask(brain,t.blocks(n,K))
    y_back=t.from_slabs(syn.predict_volume(ct_s,brain_s,(5.0,1.8,1.8))[0],t.blocks(n,K))
    y_sl=sliding(ct,brain)
    sp=(1.0,1.8,1.8)
    for name,y in (('slabs',y_back),('sliding',y_sl)):
        m=t.metrics.lesion_metrics(y,dwi,brain,lesion,ct_hu=ct,spacing=sp)
        b=brain>0
        print(seed,name,'fb %.1f psnr %.2f sp %.3f'%(m['false_bright_ml'],t.metrics.psnr(y*b,dwi*b,b),t.metrics.superpixel_correlation(y,dwi,b,spacing=sp)[0]), ' '.join('%.2fmL:%.2f'%(L['volume_ml'],L['ratio_syn']) for L in m['lesions']),flush=True)
