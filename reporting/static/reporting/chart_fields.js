// The report form's charts and query parameters (reporting/widgets.py): "Add" appends an empty row from the
// widget's <template>, "Remove" takes a row away. Without this script the form still works: it
// comes with empty rows to fill, and a row whose fields are cleared is no chart.
(function () {
  "use strict";
  function renumber(rows) {
    rows.querySelectorAll("[data-chart-row]").forEach((row, position) => {
      row.querySelectorAll("[aria-label]").forEach((field) => {
        field.setAttribute("aria-label", field.getAttribute("aria-label").replace(/^(Chart|Parameter) [^:]*:/, `$1 ${position + 1}:`));
      });
    });
  }
  function wire(row, rows) {
    const remove = row.querySelector("[data-chart-remove]");
    remove.hidden = false;
    remove.addEventListener("click", () => {
      row.remove();
      renumber(rows);
    });
  }
  function start() {
    document.querySelectorAll("[data-chart-fields]").forEach((widget) => {
      const rows = widget.querySelector("[data-chart-rows]");
      const count = widget.querySelector("[data-chart-count]");
      const template = widget.querySelector("template[data-chart-template]");
      const add = widget.querySelector("[data-chart-add]");
      rows.querySelectorAll("[data-chart-row]").forEach((row) => wire(row, rows));
      add.hidden = false;
      add.addEventListener("click", () => {
        // Indexes only grow: a removed row's index is never reused, and the server reads up to the count.
        const index = Number(count.value);
        const row = template.content.firstElementChild.cloneNode(true);
        row.querySelectorAll("[name], [id]").forEach((field) => {
          ["name", "id"].forEach((attribute) => {
            if (field.hasAttribute(attribute)) {
              field.setAttribute(attribute, field.getAttribute(attribute).replace("__prefix__", String(index)));
            }
          });
        });
        count.value = String(index + 1);
        rows.appendChild(row);
        wire(row, rows);
        renumber(rows);
        row.querySelector("select, input").focus();
      });
    });
  }
  // The admin loads its scripts in the page's head, before the form exists.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
