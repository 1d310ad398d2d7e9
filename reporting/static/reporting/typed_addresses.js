// The report form's typed recipients, checked as they are typed: each address that cannot be
// an email address is named under the box at once (the server checks them again on save).
(function () {
  "use strict";
  const looksValid = (address) => /^[^\s@,;<>"]+@[^\s@,;<>"]+\.[^\s@,;<>"]+$/.test(address);
  function start() {
  document.querySelectorAll("textarea[data-addresses]").forEach((box) => {
    const note = document.createElement("div");
    note.className = "help typed-addresses";
    note.setAttribute("aria-live", "polite");
    box.insertAdjacentElement("afterend", note);
    const check = () => {
      const addresses = box.value.split(/[\n,;]+/).map((each) => each.trim()).filter(Boolean);
      const bad = addresses.filter((address) => !looksValid(address));
      note.textContent = bad.length
        ? `Not an email address: ${bad.join(", ")}`
        : `${addresses.length} address${addresses.length === 1 ? "" : "es"}`;
      note.style.color = bad.length ? "#c62828" : "";
      box.setAttribute("aria-invalid", bad.length ? "true" : "false");
    };
    box.addEventListener("input", check);
    check();
  });
  }
  // The admin loads its scripts in the page's head, before the form exists.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
