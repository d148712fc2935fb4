"""The report page's stylesheet and script (static: the rows arrive as JSON data), kept apart
from :mod:`skygate.report`, which computes what the page shows."""

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;background:#fafafa;color:#222}
.card{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1em;margin:1em 0}
.card h3{margin:0 0 .3em;word-break:break-all}
.imgs figure{display:inline-block;margin:0 8px 0 0}
.imgs img{border:1px solid #ccc;background:#eee}
.AI{color:#b00020}.Real{color:#1b5e20}.Uncertain{color:#8a6d00}.failed,.pending{color:#555}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;font-size:90%}
.sum{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
.bar{padding:.5em 0}.bar input,.bar select,.bar button{margin-right:.6em}
.miss{color:#b00020;font-size:90%}
.imgs{display:flex;align-items:center;gap:1em}
"""

# Rows are rendered with createElement/textContent only: no string of the data ever
# becomes markup.
SCRIPT = r"""
(function(){
const D=JSON.parse(document.getElementById('data').textContent);
const R=D.rows,F=D.folders,DIR=D.dir,PS=D.pageSize,M=D.methods;
const $=id=>document.getElementById(id);
const low=R.map(r=>r.n.toLowerCase());
let st={filter:'all',folder:'',q:'',sort:'name',page:1},cache=null,cacheKey='';
function el(tag,attrs,text){const e=document.createElement(tag);
 if(attrs)for(const k in attrs)e.setAttribute(k,attrs[k]);
 if(text!==undefined)e.textContent=text;return e;}
function fmt(x){return x===null||x===undefined?'—':x.toFixed(2);}
function readHash(){const h=new URLSearchParams(location.hash.slice(1));
 st.filter=h.get('filter')||'all';st.folder=h.get('folder')||'';st.q=h.get('q')||'';
 st.sort=h.get('sort')||'name';st.page=Math.max(1,parseInt(h.get('page')||'1',10)||1);
 $('f').value=st.filter;if($('f').value!==st.filter){st.filter='all';$('f').value='all';}
 $('d').value=st.folder;if($('d').value!==st.folder){st.folder='';$('d').value='';}
 $('s').value=st.sort;if($('s').value!==st.sort){st.sort='name';$('s').value='name';}
 $('q').value=st.q;}
function writeHash(){const h=new URLSearchParams();h.set('filter',st.filter);h.set('sort',st.sort);
 if(st.folder)h.set('folder',st.folder);if(st.q)h.set('q',st.q);if(st.page>1)h.set('page',st.page);
 history.replaceState(null,'','#'+h.toString());}
function matching(){const key=[st.filter,st.folder,st.q,st.sort].join('\u0000');
 if(key===cacheKey)return cache;
 const q=st.q.toLowerCase(),fi=st.folder?F.indexOf(st.folder):-1,out=[];
 for(let i=0;i<R.length;i++){const r=R[i];
  if(st.filter!=='all'&&r.v!==st.filter)continue;
  if(fi>=0&&r.d!==fi)continue;
  if(q&&low[i].indexOf(q)<0)continue;out.push(i);}
 if(st.sort==='conf')out.sort((a,b)=>(R[b].c??-1)-(R[a].c??-1)||a-b);
 else if(st.sort==='pai')out.sort((a,b)=>(R[b].p??-1)-(R[a].p??-1)||a-b);
 cache=out;cacheKey=key;return out;}
let picsTotal=0,picsOk=0,picsBad=0;
function picDone(ok){if(ok)picsOk++;else picsBad++;showPics();}
function showPics(){document.body.dataset.picturesTotal=picsTotal;
 document.body.dataset.picturesShown=picsOk;document.body.dataset.picturesFailed=picsBad;
 $('pics').textContent=picsBad?picsBad+' of '+picsTotal+' pictures could not be shown':
  picsTotal+' pictures on this page';}
function figure(p,alt,missing){
 if(!p)return missing?el('span',{class:'miss'},alt+' missing '):null;
 const fig=el('figure'),a=el('a',{href:DIR+p[1]});
 const img=el('img',{alt:alt,loading:'lazy',decoding:'async',width:p[2],height:p[3]});
 img.addEventListener('load',()=>picDone(true));img.addEventListener('error',()=>picDone(false));
 img.src=DIR+p[0];picsTotal++;a.appendChild(img);fig.appendChild(a);
 fig.appendChild(el('figcaption',null,alt));return fig;}
function card(r){
 const c=el('div',{class:'card','data-verdict':r.v,'data-conf':r.c??0,'data-name':r.n});
 const h=el('h3');if(r.g){const a=el('a',{href:DIR+r.g},r.n);h.appendChild(a);}
 else h.textContent=r.n;c.appendChild(h);
 if(r.v==='failed'||r.v==='pending'){
  c.appendChild(el('p',{class:r.v},r.st.toUpperCase()+': '+(r.e||'')));return c;}
 const p=el('p',{class:r.v});p.appendChild(el('b',null,r.v));
 p.appendChild(document.createTextNode(' — confidence '+fmt(r.c)+', P(AI) '+fmt(r.p)+
  (r.s?' ('+r.s+')':'')));
 c.appendChild(p);const imgs=el('div',{class:'imgs'});
 const f=figure(r.t,'image',(r.x||[]).includes('image'));if(f)imgs.appendChild(f);
 if(r.g)imgs.appendChild(el('a',{href:DIR+r.g,class:'why'},'map, why and provenance ›'));
 c.appendChild(imgs);if(r.y)c.appendChild(el('p',{class:'why'},'Why: '+r.y));
 c.appendChild(el('p',null,'Metadata: '+(r.m||'no metadata findings')));
 const bad=(r.t2||[]).filter(m=>m[3]==='error');
 if(bad.length){const t=el('table'),h=el('tr');
  for(const x of ['method','verdict','confidence','status','error'])h.appendChild(el('th',null,x));
  t.appendChild(h);for(const m of bad){const tr=el('tr');
   tr.appendChild(el('td',null,M[m[0]]));tr.appendChild(el('td',null,m[1]));
   tr.appendChild(el('td',null,fmt(m[2])));tr.appendChild(el('td',null,m[3]));
   tr.appendChild(el('td',null,m[4]||''));t.appendChild(tr);}
  c.appendChild(t);}
 return c;}
function render(){const idx=matching(),pages=Math.max(1,Math.ceil(idx.length/PS));
 if(st.page>pages)st.page=pages;const start=(st.page-1)*PS,list=$('list');
 picsTotal=picsOk=picsBad=0;const frag=document.createDocumentFragment();
 for(const i of idx.slice(start,start+PS))frag.appendChild(card(R[i]));
 list.replaceChildren(frag);showPics();
 $('shown').textContent=idx.length+' of '+R.length+' shown';
 for(const id of ['pg','pg2'])$(id).textContent='page '+st.page+' of '+pages+
  (idx.length?' (rows '+(start+1)+'–'+Math.min(start+PS,idx.length)+')':'');
 document.body.dataset.page=st.page;document.body.dataset.pages=pages;
 document.body.dataset.matching=idx.length;document.body.dataset.rendered=list.children.length;
 writeHash();}
function go(delta){st.page+=delta;if(st.page<1)st.page=1;render();
 window.scrollTo(0,$('list').offsetTop-80);}
function change(){st.filter=$('f').value;st.folder=$('d').value;st.sort=$('s').value;
 st.q=$('q').value;st.page=1;render();}
const dsel=$('d');F.forEach(f=>dsel.appendChild(el('option',{value:f},f)));
for(const id of ['f','d','s'])$(id).addEventListener('change',change);
let timer=0;
$('q').addEventListener('input',()=>{clearTimeout(timer);timer=setTimeout(change,120);});
for(const [id,d] of [['prev',-1],['next',1],['prev2',-1],['next2',1]])
 $(id).addEventListener('click',()=>go(d));
window.addEventListener('hashchange',()=>{readHash();render();});
readHash();render();
})();
"""
