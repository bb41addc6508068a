// The station PWA's service worker: caches the app shell so the page opens
// offline, and leaves the API alone (redemptions are queued by the page in
// IndexedDB, never by the cache). Same-origin GETs: network first with a short
// timeout, the cache when offline; a new version is picked up on the next load.
const CACHE = "station-shell-v1";
const SHELL = [
  "./",
  "index.html",
  "app.js",
  "style.css",
  "config.json",
  "manifest.webmanifest",
  "icons/icon.svg",
  "icons/icon-192.png",
  "icons/icon-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  event.respondWith(networkFirst(request));
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request, { signal: AbortSignal.timeout(4000) });
    if (response.ok) await cache.put(request, response.clone());
    return response;
  } catch {
    const cached = await cache.match(request, { ignoreSearch: true }) ??
      (request.mode === "navigate" ? await cache.match("index.html") : undefined);
    return cached ?? new Response("Offline and not cached", { status: 503 });
  }
}
