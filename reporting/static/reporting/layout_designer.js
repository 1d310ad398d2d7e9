// The report form's layout designer and live preview (reporting/widgets.py LayoutWidget,
// reporting/admin/designer.py). "Fetch a sample" posts the form to the sample endpoint and
// offers the lists of rows it found, then the fields of the chosen one; every choice is written
// to the layout's JSON textarea (the field the form saves), and the live preview posts the
// whole form to show the email as it would be sent. Everything from the API is shown as text
// (textContent, input values): never as HTML. Without this script the JSON can be typed.
(function () {
  "use strict";

  const FORMATS = [
    ["text", "Text"],
    ["number", "Number"],
    ["currency", "Amount (currency)"],
    ["percent", "Percent"],
    ["date", "Date"],
  ];
  const NUMERIC = new Set(["number", "currency", "percent"]);
  const DATE_STYLES = [
    ["short", "Short (31/10/2026)"],
    ["medium", "Medium (31 Oct 2026)"],
    ["long", "Long (31 October 2026)"],
  ];
  const ALIGNS = [
    ["", "Auto"],
    ["left", "Left"],
    ["right", "Right"],
    ["center", "Centre"],
  ];

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([name, value]) => {
      if (value === undefined || value === null || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name === "value") node.value = value;
      else if (name === "checked") node.checked = Boolean(value);
      else node.setAttribute(name, value === true ? "" : value);
    });
    children.flat().forEach((child) => {
      if (child !== null && child !== undefined) node.append(child);
    });
    return node;
  }

  function select(options, value, attributes) {
    const node = el("select", attributes);
    options.forEach(([optionValue, label]) => node.append(el("option", { value: optionValue, text: label })));
    const wanted = value === undefined ? options[0][0] : value;
    node.value = wanted;
    if (node.value !== wanted) {
      node.append(el("option", { value: wanted, text: wanted })); // as stored, though not offered
      node.value = wanted;
    }
    return node;
  }

  class Designer {
    constructor(root) {
      this.root = root;
      this.form = root.closest("form");
      this.textarea = document.getElementById(root.dataset.textarea);
      this.ui = root.querySelector("[data-designer]");
      this.body = root.querySelector("[data-designer-body]");
      this.status = root.querySelector("[data-sample-status]");
      this.day = root.querySelector("[data-sample-day]");
      this.lists = root.querySelector("[data-sample-lists]");
      this.sampleRows = root.querySelector("[data-sample-rows]");
      this.columnsTable = root.querySelector("[data-columns]");
      this.order = root.querySelector("[data-order]");
      this.headline = root.querySelector("[data-headline]");
      this.intro = root.querySelector("[data-intro]");
      this.previewPanel = root.querySelector("[data-preview-panel]");
      this.previewStatus = root.querySelector("[data-preview-status]");
      this.previewLive = root.querySelector("[data-preview-live]");
      this.frame = root.querySelector("[data-preview-frame]");
      this.fields = []; // [{field, format, examples}] from the sample and the layout
      this.numbers = []; // [{path, value}] numbers outside the rows, for headline figures
      this.layout = this.readLayout() || {};
      this.previewTimer = null;
      this.previewRequest = null;
      this.ui.hidden = false;
      if ((this.layout.columns || []).length) this.showDesigner();
      root.querySelector("[data-sample-fetch]").addEventListener("click", () => this.fetchSample());
      root.querySelector("[data-headline-add]").addEventListener("click", () => {
        this.layout.headline = [...(this.layout.headline || []), { label: "Rows", row_count: true }];
        this.changed(true);
      });
      this.intro.addEventListener("input", () => {
        this.layout.intro = this.intro.value;
        this.changed(false);
      });
      this.textarea.addEventListener("input", () => {
        const typed = this.readLayout();
        if (typed) {
          this.layout = typed;
          this.draw();
        }
      });
      // The live preview follows the whole form: data, subject, charts, template, locale...
      this.form.addEventListener("input", (event) => this.formChanged(event));
      this.form.addEventListener("change", (event) => this.formChanged(event));
    }

    readLayout() {
      const text = this.textarea.value.trim();
      if (!text) return {};
      try {
        const parsed = JSON.parse(text);
        return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : null;
      } catch (error) {
        return null;
      }
    }

    writeLayout() {
      const layout = {};
      ["columns", "sort", "headline"].forEach((key) => {
        if ((this.layout[key] || []).length) layout[key] = this.layout[key];
      });
      if (this.layout.subtotal_by) layout.subtotal_by = this.layout.subtotal_by;
      if (this.layout.intro) layout.intro = this.layout.intro;
      this.textarea.value = Object.keys(layout).length ? JSON.stringify(layout, null, 2) : "";
    }

    changed(redraw) {
      this.writeLayout();
      if (redraw) this.draw();
      this.schedulePreview();
    }

    formChanged(event) {
      if (this.root.contains(event.target) && event.target !== this.textarea) return; // the designer's own
      this.schedulePreview();
    }

    // --- the sample ------------------------------------------------------------------------

    post(url, extra) {
      const body = new FormData(this.form);
      body.set("_design_report", this.root.dataset.reportId || "");
      body.set("_design_day", this.day.value || "");
      Object.entries(extra || {}).forEach(([name, value]) => body.set(name, value));
      return fetch(url, { method: "POST", body, credentials: "same-origin", signal: extra && extra.signal });
    }

    async fetchSample(recordsPath) {
      const records = this.form.querySelector("#id_records_path");
      if (recordsPath !== undefined && records) records.value = recordsPath;
      this.status.textContent = "Fetching a sample of the live data…";
      let answer;
      try {
        const response = await this.post(this.root.dataset.sampleUrl);
        answer = await response.json();
      } catch (error) {
        this.status.textContent = "The sample could not be fetched: " + error;
        return;
      }
      if (answer.errors) {
        this.status.textContent = answer.errors.join(" ") + (answer.request_url ? ` (asked for ${answer.request_url})` : "");
        return;
      }
      this.numbers = answer.numbers || [];
      this.fields = answer.fields || [];
      this.showLists(answer, records ? records.value : "");
      this.showRows(answer.rows || []);
      if (answer.row_count === null) {
        this.status.textContent = `${answer.period}: the answer has no list of rows at '${answer.records_path || "(the whole answer)"}'. Choose one of the lists found.`;
        return;
      }
      this.status.textContent = `${answer.period}: ${answer.row_count} row${answer.row_count === 1 ? "" : "s"} from ${answer.request_url}`;
      if (!(this.layout.columns || []).length && answer.suggested) {
        this.layout = { ...this.layout, ...answer.suggested };
      }
      this.showDesigner();
      this.changed(true);
    }

    showLists(answer, current) {
      this.lists.replaceChildren();
      const lists = answer.lists || [];
      if (!lists.length) return;
      const choice = el("select", { "aria-label": "Rows from", "data-records-choice": true });
      lists.forEach((list) =>
        choice.append(el("option", { value: list.path, text: `${list.path || "(the whole answer)"} — ${list.rows} rows` })),
      );
      if (!lists.some((list) => list.path === current)) {
        choice.prepend(el("option", { value: current, text: `${current || "(the whole answer)"} — not a list of rows` }));
      }
      choice.value = current;
      choice.addEventListener("change", () => this.fetchSample(choice.value));
      this.lists.append(el("p", {}, el("label", { text: "Rows from: ", style: "width:auto;padding:0;float:none;display:inline" }), choice));
    }

    showRows(rows) {
      this.sampleRows.replaceChildren();
      if (!rows.length) return;
      const names = Object.keys(rows[0]);
      const table = el("table", { "data-sample-table": true, style: "font-size:11px;margin:.25rem 0 .5rem" });
      table.append(el("caption", { text: `The first ${rows.length} rows as the API sends them`, style: "text-align:left" }));
      table.append(el("tr", {}, names.map((name) => el("th", { text: name }))));
      rows.forEach((row) => table.append(el("tr", {}, names.map((name) => el("td", { text: row[name] ?? "" })))));
      this.sampleRows.append(table);
    }

    showDesigner() {
      this.body.hidden = false;
      this.previewPanel.hidden = false;
      this.draw();
    }

    // --- drawing ---------------------------------------------------------------------------

    knownFields() {
      const names = this.fields.map((entry) => entry.field);
      (this.layout.columns || []).forEach((column) => {
        if (!names.includes(column.field)) names.push(column.field);
      });
      return names;
    }

    draw() {
      if (this.body.hidden) return;
      this.drawColumns();
      this.drawOrder();
      this.drawHeadline();
      if (document.activeElement !== this.intro) this.intro.value = this.layout.intro || "";
    }

    drawColumns() {
      const columns = this.layout.columns || [];
      const shown = columns.map((column) => column.field);
      const rest = this.knownFields().filter((name) => !shown.includes(name));
      const head = el(
        "tr",
        {},
        ["Show", "Field", "Label", "Format", "Decimals / style", "Currency", "Total", "Red if negative", "Align", "Order"].map(
          (title) => el("th", { text: title, scope: "col" }),
        ),
      );
      const rows = [
        ...columns.map((column, index) => this.columnRow(column, index, true)),
        ...rest.map((name) => this.columnRow(this.guessed(name), -1, false)),
      ];
      this.columnsTable.replaceChildren(el("thead", {}, head), el("tbody", {}, rows));
    }

    guessed(name) {
      const entry = this.fields.find((each) => each.field === name);
      return { field: name, label: "", format: entry ? entry.format : "text" };
    }

    columnRow(column, index, shown) {
      const update = (changes, redraw) => {
        Object.entries(changes).forEach(([key, value]) => {
          if (value === "" || value === false || value === undefined) delete column[key];
          else column[key] = value;
        });
        if (!NUMERIC.has(column.format || "text")) delete column.total;
        this.changed(redraw);
      };
      const name = column.field;
      const show = el("input", { type: "checkbox", checked: shown, "aria-label": `Show ${name}` });
      show.addEventListener("change", () => {
        const columns = this.layout.columns || [];
        if (show.checked) this.layout.columns = [...columns, column];
        else this.layout.columns = columns.filter((each) => each !== column);
        this.changed(true);
      });
      const entry = this.fields.find((each) => each.field === name);
      const field = el("td", {}, el("code", { text: name }), entry && entry.examples.length ? el("div", { class: "help", text: "e.g. " + entry.examples.join(", "), style: "margin:0;padding:0" }) : null);
      const label = el("input", { type: "text", value: column.label || "", placeholder: humanize(name), "aria-label": `Label of ${name}`, size: 16, maxlength: 100 });
      label.addEventListener("input", () => update({ label: label.value.trim() }, false));
      const format = select(FORMATS, column.format || "text", { "aria-label": `Format of ${name}` });
      format.addEventListener("change", () => {
        const changes = { format: format.value === "text" ? "" : format.value };
        if (format.value === "currency" && !column.currency && !column.currency_field) changes.currency = "EUR";
        if (format.value !== "currency") Object.assign(changes, { currency: "", currency_field: "" });
        update(changes, true);
      });
      const kind = column.format || "text";
      const detail = el("td", {});
      if (NUMERIC.has(kind)) {
        const decimals = el("input", { type: "number", min: 0, max: 6, value: column.decimals ?? (kind === "percent" ? 0 : 2), "aria-label": `Decimals of ${name}`, style: "width:4em" });
        decimals.addEventListener("input", () => update({ decimals: decimals.value === "" ? "" : Number(decimals.value) }, false));
        detail.append(decimals);
        if (kind === "percent") {
          const points = el("input", { type: "checkbox", checked: column.percent_points, "aria-label": `${name} is in percentage points` });
          points.addEventListener("change", () => update({ percent_points: points.checked }, false));
          detail.append(" ", el("label", { style: "width:auto;padding:0;float:none;display:inline", title: "12.5 means 12.5 %, not 1250 %" }, points, " already in %"));
        }
      } else if (kind === "date") {
        const style = select(DATE_STYLES, column.date_style || "medium", { "aria-label": `Date style of ${name}` });
        style.addEventListener("change", () => update({ date_style: style.value === "medium" ? "" : style.value }, false));
        detail.append(style);
      }
      const currency = el("td", {});
      if (kind === "currency") {
        const options = [["", "Fixed code:"], ...this.knownFields().filter((each) => each !== name).map((each) => [each, `from field ${each}`])];
        const from = select(options, column.currency_field || "", { "aria-label": `Currency of ${name} from` });
        const code = el("input", { type: "text", value: column.currency || "", size: 4, maxlength: 3, placeholder: "EUR", "aria-label": `Currency code of ${name}`, hidden: Boolean(column.currency_field) });
        from.addEventListener("change", () => update({ currency_field: from.value, currency: from.value ? "" : code.value.trim().toUpperCase() || "EUR" }, true));
        code.addEventListener("input", () => update({ currency: code.value.trim().toUpperCase() }, false));
        currency.append(from, " ", code);
      }
      const total = el("input", { type: "checkbox", checked: column.total, disabled: !NUMERIC.has(kind), "aria-label": `Total of ${name}` });
      total.addEventListener("change", () => update({ total: total.checked }, false));
      const red = el("input", { type: "checkbox", checked: column.negative_red, disabled: !NUMERIC.has(kind), "aria-label": `${name} red if negative` });
      red.addEventListener("change", () => update({ negative_red: red.checked }, false));
      const align = select(ALIGNS, column.align || "", { "aria-label": `Alignment of ${name}` });
      align.addEventListener("change", () => update({ align: align.value }, false));
      const move = el("td", {});
      if (shown) {
        [["↑", -1, "up"], ["↓", 1, "down"]].forEach(([arrow, step, word]) => {
          const button = el("button", { type: "button", class: "button", text: arrow, "aria-label": `Move ${name} ${word}`, disabled: !this.layout.columns[index + step] });
          button.addEventListener("click", () => {
            const columns = this.layout.columns;
            [columns[index], columns[index + step]] = [columns[index + step], columns[index]];
            this.changed(true);
          });
          move.append(button, " ");
        });
      }
      const row = el("tr", { "data-column": name, style: shown ? "" : "opacity:.6" }, el("td", {}, show), field, el("td", {}, label), el("td", {}, format), detail, currency, el("td", {}, total), el("td", {}, red), el("td", {}, align), move);
      if (!shown) [label, format, total, red, align].forEach((control) => (control.disabled = true));
      return row;
    }

    drawOrder() {
      const names = [["", "(as the API sends them)"], ...this.knownFields().map((name) => [name, name])];
      const sort = (this.layout.sort || [])[0] || {};
      const by = select(names, sort.field || "", { "aria-label": "Sort rows by" });
      const descending = el("input", { type: "checkbox", checked: sort.descending, "aria-label": "Largest first" });
      const setSort = () => {
        this.layout.sort = by.value ? [{ field: by.value, ...(descending.checked ? { descending: true } : {}) }] : [];
        this.changed(false);
      };
      by.addEventListener("change", setSort);
      descending.addEventListener("change", setSort);
      const groups = select([["", "(no subtotals)"], ...names.slice(1)], this.layout.subtotal_by || "", { "aria-label": "Subtotals by" });
      groups.addEventListener("change", () => {
        this.layout.subtotal_by = groups.value;
        this.changed(false);
      });
      const inline = "width:auto;padding:0;float:none;display:inline";
      this.order.replaceChildren(
        el("label", { style: inline }, "Sort by ", by),
        el("label", { style: inline }, descending, " largest (or last) first"),
        el("label", { style: inline }, "Subtotals by ", groups),
        el("span", { class: "help", style: "margin:0;padding:0", text: "A total line sums the columns ticked “Total”, over all rows." }),
      );
    }

    drawHeadline() {
      const figures = this.layout.headline || [];
      const columns = (this.layout.columns || []).filter((column) => NUMERIC.has(column.format || "text"));
      const sources = [
        ["count:", "Number of rows"],
        ...columns.map((column) => [`total:${column.field}`, `Total of ${column.label || column.field}`]),
        ...this.numbers.map((number) => [`path:${number.path}`, `${number.path} (${number.value})`]),
      ];
      this.headline.replaceChildren(
        ...figures.map((figure, index) => {
          const source = figure.row_count ? "count:" : figure.total_of ? `total:${figure.total_of}` : `path:${figure.path || ""}`;
          const update = () => this.changed(false);
          const label = el("input", { type: "text", value: figure.label || "", size: 18, maxlength: 60, "aria-label": `Headline figure ${index + 1}: label` });
          label.addEventListener("input", () => {
            figure.label = label.value;
            update();
          });
          const from = select(sources, source, { "aria-label": `Headline figure ${index + 1}: value` });
          from.addEventListener("change", () => {
            ["row_count", "total_of", "path"].forEach((key) => delete figure[key]);
            const [kind, rest] = [from.value.split(":")[0], from.value.slice(from.value.indexOf(":") + 1)];
            if (kind === "count") figure.row_count = true;
            else if (kind === "total") {
              figure.total_of = rest;
              const column = columns.find((each) => each.field === rest);
              ["format", "decimals", "currency", "currency_field", "percent_points", "negative_red"].forEach((key) => {
                if (column && column[key] !== undefined) figure[key] = column[key];
                else delete figure[key];
              });
            } else figure.path = rest;
            if (!label.value) figure.label = humanize(rest || "rows");
            this.changed(true);
          });
          const format = select(FORMATS.filter(([value]) => value !== "date"), figure.format || "text", { "aria-label": `Headline figure ${index + 1}: format`, disabled: figure.row_count });
          format.addEventListener("change", () => {
            figure.format = format.value;
            if (format.value === "currency" && !figure.currency && !figure.currency_field) figure.currency = "EUR";
            if (format.value !== "currency") {
              delete figure.currency;
              delete figure.currency_field;
            }
            this.changed(true);
          });
          const code = el("input", { type: "text", value: figure.currency || "", size: 4, maxlength: 3, placeholder: "EUR", "aria-label": `Headline figure ${index + 1}: currency`, hidden: figure.format !== "currency" || Boolean(figure.currency_field) });
          code.addEventListener("input", () => {
            figure.currency = code.value.trim().toUpperCase();
            update();
          });
          const red = el("input", { type: "checkbox", checked: figure.negative_red, "aria-label": `Headline figure ${index + 1}: red if negative` });
          red.addEventListener("change", () => {
            figure.negative_red = red.checked || undefined;
            update();
          });
          const remove = el("button", { type: "button", class: "button", text: "Remove", "aria-label": `Remove headline figure ${index + 1}` });
          remove.addEventListener("click", () => {
            this.layout.headline = figures.filter((each) => each !== figure);
            this.changed(true);
          });
          const inline = "width:auto;padding:0;float:none;display:inline";
          return el("p", { "data-figure": index }, label, " ", from, " ", format, " ", code, " ", el("label", { style: inline }, red, " red if negative"), " ", remove);
        }),
      );
    }

    // --- the live preview --------------------------------------------------------------------

    schedulePreview() {
      if (this.previewPanel.hidden || !this.previewLive.checked) return;
      clearTimeout(this.previewTimer);
      this.previewTimer = setTimeout(() => this.refreshPreview(), 700);
    }

    async refreshPreview() {
      if (this.previewRequest) this.previewRequest.abort();
      const controller = new AbortController();
      this.previewRequest = controller;
      this.previewStatus.textContent = "Updating the preview…";
      let answer;
      try {
        const response = await this.post(this.root.dataset.previewUrl, { signal: controller.signal });
        answer = await response.json();
      } catch (error) {
        if (error.name !== "AbortError") this.previewStatus.textContent = "The preview could not be made: " + error;
        return;
      }
      if (controller !== this.previewRequest) return;
      this.previewRequest = null;
      if (answer.errors) {
        this.previewStatus.textContent = "Not previewed: " + answer.errors.join(" ");
        this.previewStatus.dataset.state = "error";
        return;
      }
      this.previewStatus.dataset.state = "ok";
      const whom = answer.recipient ? ` as ${answer.recipient} would get it` : "";
      let held = answer.checks_failed.length ? ` It would be held: ${answer.checks_failed.join(" ")}` : "";
      if (answer.skipped) held += ` A scheduled run would be skipped: ${answer.skipped}`;
      this.previewStatus.textContent = `${answer.period}, ${answer.row_count} row${answer.row_count === 1 ? "" : "s"}${whom}.${held} ${answer.recipient_note || ""}`;
      this.root.querySelector("[data-preview-subject]").textContent = answer.subject;
      this.frame.srcdoc = answer.html; // sandbox="" and the frame's own policy: no script, no network
      this.root.querySelector("[data-preview-files]").textContent = answer.files.length
        ? "Attachments: " + answer.files.map((file) => `${file.filename} (${file.size}${file.inline ? ", inside the email" : ""})`).join(", ")
        : "No attachments.";
    }
  }

  function humanize(name) {
    const words = String(name).replace(/[_\-.]+/g, " ").replace(/([a-z])([A-Z])/g, "$1 $2").trim();
    return words ? words[0].toUpperCase() + words.slice(1).toLowerCase() : name;
  }

  function start() {
    document.querySelectorAll("[data-layout-designer]").forEach((root) => new Designer(root));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
