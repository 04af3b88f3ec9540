// Hangar dashboard: refreshes each [data-live] region from its fragment URL
// every few seconds, swapping only that region and only when it changed.
// It waits while the tab is hidden or the user is using a control inside
// the region (focus, an open <details>), so nothing moves under the cursor.
(function () {
  "use strict";
  var main = document.querySelector("main[data-poll-ms]");
  var regions = document.querySelectorAll("[data-live]");
  if (!main || regions.length === 0) return;
  var every = parseInt(main.getAttribute("data-poll-ms"), 10) || 3000;

  function busy(region) {
    return region.contains(document.activeElement) && document.activeElement !== document.body ||
      region.querySelector("details[open]") !== null;
  }

  function refresh(region) {
    if (document.hidden || busy(region)) return Promise.resolve();
    return fetch(region.getAttribute("data-live"), {
      credentials: "same-origin",
      headers: { "Accept": "text/html" }
    }).then(function (res) {
      if (res.status === 401) { window.location.assign("/ui/login"); return; }
      if (!res.ok) { region.setAttribute("data-stale", "true"); return; }
      return res.text().then(function (html) {
        region.removeAttribute("data-stale");
        if (html !== region.getAttribute("data-last") && !busy(region)) {
          region.setAttribute("data-last", html);
          region.innerHTML = html;
        }
      });
    }).catch(function () { region.setAttribute("data-stale", "true"); });
  }

  function tick() {
    Promise.all(Array.prototype.map.call(regions, refresh)).then(function () {
      window.setTimeout(tick, every);
    });
  }
  window.setTimeout(tick, every);
})();
