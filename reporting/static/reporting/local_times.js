// Times in the admin are shown in the report's own timezone; beside each one marked
// <time class="local-time" datetime="…">, this adds the same moment in the viewer's
// timezone (the browser's), e.g. "· your time: Tue 1 Dec, 08:00 CET".
function showViewerTimes() {
  "use strict";
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const format = new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  document.querySelectorAll("time.local-time[datetime]").forEach((element) => {
    const moment = new Date(element.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime()) || element.dataset.zone === zone) return;
    const yours = document.createElement("span");
    yours.className = "viewer-time";
    yours.title = `In your timezone (${zone})`;
    yours.textContent = ` · your time: ${format.format(moment)}`;
    element.after(yours);
  });
}
// Loaded in the page's <head> by the admin: wait for the times to be there.
if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", showViewerTimes);
} else {
  showViewerTimes();
}
