from flask import jsonify


@app.route('/total')
def total():
    return jsonify(total=42)
