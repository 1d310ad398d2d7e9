// A run's page while the run works: asks the server for its progress every second and a
// half, moves the steps along and fills in the deliveries; reloads the page once the run
// has finished, so the archived email and its attachments appear.
(function () {
  "use strict";
  const panel = document.getElementById("run-progress");
  if (!panel) return;
  const url = panel.dataset.url;
  const steps = Array.from(panel.querySelectorAll("[data-step]"));
  const statusText = panel.querySelector("[data-status]");
  const errorText = panel.querySelector("[data-error]");
  const deliveries = panel.querySelector("[data-deliveries]");
  let failures = 0;

  function show(progress) {
    const reached = steps.findIndex((step) => step.dataset.step === progress.step);
    steps.forEach((step, index) => {
      step.classList.toggle("done", index < reached || progress.finished);
      step.classList.toggle("current", index === reached && !progress.finished);
    });
    statusText.textContent = progress.status_label;
    errorText.textContent = [progress.recipient_reports, progress.error].filter(Boolean).join(" ");
    deliveries.replaceChildren(
      ...progress.deliveries.map((delivery) => {
        const row = document.createElement("li");
        row.textContent = `${delivery.address}: ${delivery.status_label}` + (delivery.error ? ` (${delivery.error})` : "");
        row.dataset.status = delivery.status;
        return row;
      })
    );
  }

  async function poll() {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const progress = await response.json();
      show(progress);
      failures = 0;
      if (progress.finished) {
        panel.dataset.finished = "true";
        window.setTimeout(() => window.location.reload(), 800);
        return;
      }
    } catch (error) {
      failures += 1;
      statusText.textContent = `Could not get the run's progress (${error.message}); trying again…`;
      if (failures > 20) return;
    }
    window.setTimeout(poll, 1500);
  }

  poll();
})();
