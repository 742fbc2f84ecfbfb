// Film page: as the fan changes the number of stakes, say which reward tier
// their paid stakes plus this purchase reach. The server renders the line for
// one stake; without script the tier table above says the same.
(function () {
  var line = document.getElementById("tier-reach");
  var select = document.getElementById("units");
  if (!line || !select) return;
  var tiers = JSON.parse(line.getAttribute("data-tiers") || "[]");
  var paid = parseInt(line.getAttribute("data-paid") || "0", 10);
  function tickets(n) { return n + " screening ticket" + (n === 1 ? "" : "s"); }
  function update() {
    var chosen = parseInt(select.value, 10);
    if (!(chosen > 0)) return;
    var stakes = paid + chosen;
    var reached = null, next = null;
    tiers.forEach(function (t) {
      if (t.min <= stakes && (!reached || t.min > reached.min)) reached = t;
      if (t.min > stakes && (!next || t.min < next.min)) next = t;
    });
    var plural = stakes === 1 ? "" : "s";
    line.textContent = "";
    if (reached) {
      line.append("With " + stakes + " paid stake" + plural + " you reach the ");
      var strong = document.createElement("strong");
      strong.textContent = reached.min + "+ stakes";
      line.append(strong, " tier: " + tickets(reached.tickets) + (reached.extras ? " and " + reached.extras : "") + ".");
    } else {
      line.append("With " + stakes + " paid stake" + plural + " you reach no reward tier yet.");
    }
    if (next) line.append(" " + (next.min - stakes) + " more reach the " + next.min + "+ stakes tier (" + tickets(next.tickets) + ").");
  }
  select.addEventListener("change", update);
  select.addEventListener("input", update);
})();
