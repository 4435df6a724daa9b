// Refreshes <main> in place every 15 s; without JavaScript the page is
// the same, only static. A form being filled in is never replaced.
setInterval(async () => {
  const main = document.getElementById("main");
  if (!main || main.contains(document.activeElement) && document.activeElement.tagName !== "BUTTON") return;
  try {
    const r = await fetch(location.pathname + "?part=main", { credentials: "same-origin" });
    if (r.ok) main.outerHTML = await r.text();
  } catch (_) { /* the next tick tries again */ }
}, 15000);
