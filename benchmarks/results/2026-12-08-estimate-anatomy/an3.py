import json, math, glob, numpy as np, itertools
rows={json.loads(l)['name']:json.loads(l) for l in open('feat3.jsonl')}
runs={f.split('/')[-1][:-5]:json.load(open(f)) for f in glob.glob('/work/main/benchmarks/results/2026-12-07-estimate-terms/ts*.json')}
db=lambda a,b:10*math.log10(a/b)
def terms(n):
    r=rows[n]
    I=r['I_L']; Nc=r['nv']*r['g1']; Rc=r['R_L']+2*r['covR']; Nr=r['Nr25']; T=max(Rc-Nr, 0.02*Rc)
    return I,Nc,Rc,Nr,T
print('name'.ljust(34),'true  I_L   Nc    R_L   Nr    T_L  | ax: I_ax  R_ax  ; G_sr_lat  G_sr_ax(oracle)')
for n in sorted(rows):
    r=rows[n]; I,Nc,Rc,Nr,T=terms(n)
    Iax=r['I_ax']; Rax=r['R_ax']; Tax=Rax-Nr  # assume residual noise same
    print(n[:34].ljust(34),'%5.2f %6.1f %6.1f %6.1f %6.1f %6.1f | %6.1f %6.1f ; %5.2f %5.2f'%(runs[n]['true_db'],I,Nc,Rc,Nr,T,Iax,Rax,db(I,T),db(Iax,max(Tax,1e-3))))
def model(n,a,w):
    I,Nc,Rc,Nr,T=terms(n)
    return db(a*I+Nc, a*I*(T/I)**w + Nr)
dev=sorted(n for n in rows if n.startswith('ts1')); rep=sorted(n for n in rows if n.startswith('ts2'))
best=None
for a in np.arange(0.5,6.01,0.1):
    for w in np.arange(0.2,1.01,0.02):
        e=np.array([model(n,a,w)-runs[n]['true_db'] for n in dev])
        s=np.sqrt(np.mean(e**2))
        if best is None or s<best[0]: best=(s,a,w)
s,a,w=best; print('best a %.1f w %.2f dev rms %.2f'%(a,w,s))
for grp in (dev,rep):
    print(' '.join('%s:%+.2f'%(n.split('_',2)[2][:-5],model(n,a,w)-runs[n]['true_db']) for n in grp))
