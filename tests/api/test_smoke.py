async def test_health_is_public_and_empty(client):
    response = await client.get("/health")
    assert response.status == 200
    assert await response.read() == b""
