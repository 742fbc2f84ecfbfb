// Check-in page: submit codes through the JSON endpoint so the door never
// waits for a page load. Without script the form posts and the page answers.
(function () {
  var form = document.getElementById("check-in-form");
  var out = document.getElementById("check-in-result");
  if (!form || !out || !window.fetch) return;
  var input = form.querySelector("input[name=code]");
  var token = form.querySelector("input[name=csrf_token]").value;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    fetch(form.getAttribute("data-json-url"), {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": token, "Accept": "application/json" },
      body: JSON.stringify({ code: input.value })
    }).then(function (response) { return response.json(); }).then(function (data) {
      var p = document.createElement("p");
      p.className = "flash " + (data.ok ? "flash-success" : "flash-error");
      p.setAttribute("role", data.ok ? "status" : "alert");
      p.textContent = data.message;
      out.replaceChildren(p);
      input.value = "";
      input.focus();
    }).catch(function () { form.submit(); });
  });
})();
