// Debounce helper and a fetch call.
export const debounce = (fn, ms = 250) => {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn.apply(this, args), ms);
  };
};

async function load(url) {
  const res = await fetch(`${url}?page=${1}&q=${encodeURIComponent('a b')}`);
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return res.json() ?? {};
}
