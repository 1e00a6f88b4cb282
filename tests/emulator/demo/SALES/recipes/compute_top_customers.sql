-- Top 100 customers by revenue over the last 365 days
SELECT c.customer_id,
       c.email,
       SUM(o.amount_eur) AS revenue_eur,
       RANK() OVER (ORDER BY SUM(o.amount_eur) DESC) AS rank
FROM "${projectKey}_orders_enriched" o
JOIN crm.customers c ON c.customer_id = o.customer_id
WHERE o.order_date >= CURRENT_DATE - INTERVAL '365 days'
GROUP BY c.customer_id, c.email
ORDER BY revenue_eur DESC
LIMIT 100
